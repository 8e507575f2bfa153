"""Lifecycle decisions as pure functions: data and a clock in, decisions out.

Reminders work by window plus ledger, never by "is today exactly N days before":
a threshold is due once ``not_after - now <= threshold`` and the ledger has no row
for it, so a pass missed while the service was down still finds it. When several
thresholds are due together only the most urgent is sent and all are recorded,
so a comeback after downtime sends one reminder, not a burst.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ACTIVE = "active"


@dataclass(frozen=True)
class ReminderDecision:
    """``send`` is the threshold whose reminder goes out (None: record silently); ``record`` are ledger rows."""

    send: int | None
    record: tuple[int, ...]


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when!r} has no time zone; lifecycle decisions need aware datetimes")
    return when.astimezone(UTC)


def remaining(not_after: datetime, now: datetime) -> timedelta:
    """Time left until ``not_after`` (negative once expired), independent of either side's time zone."""
    return _utc(not_after) - _utc(now)


def is_expired(not_after: datetime, now: datetime) -> bool:
    """A certificate is expired from its notAfter instant on."""
    return remaining(not_after, now) <= timedelta(0)


def due_thresholds(
    *, not_after: datetime, now: datetime, thresholds: Iterable[int], recorded: Collection[int]
) -> list[int]:
    """Thresholds (days) whose window has opened and that the ledger does not hold, most urgent first."""
    left = remaining(not_after, now)
    return sorted({t for t in thresholds if t not in recorded and left <= timedelta(days=t)})


def reminder_decision(
    *,
    status: str,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    thresholds: Iterable[int],
    recorded: Collection[int],
    renewal_pending: bool,
) -> ReminderDecision | None:
    """What to do about one certificate's reminders now; None means nothing (and nothing recorded).

    Skipped: certificates that are not active (superseded, revoked, expired), that
    have already expired, or whose renewal is pending (a failed renewal lets the
    reminder come later). A threshold at least as long as the certificate's whole
    lifetime was crossed at issuance: it is recorded without a message, so a
    short-lived certificate is not greeted by a reminder the moment it arrives.
    """
    if status != ACTIVE or renewal_pending or is_expired(not_after, now):
        return None
    due = due_thresholds(not_after=not_after, now=now, thresholds=thresholds, recorded=recorded)
    if not due:
        return None
    lifetime = _utc(not_after) - _utc(not_before)
    meaningful = [t for t in due if lifetime > timedelta(days=t)]
    return ReminderDecision(send=meaningful[0] if meaningful else None, record=tuple(due))


def should_auto_renew(
    *,
    status: str,
    not_after: datetime,
    now: datetime,
    auto_renew_days: int | None,
    renewal_pending: bool,
    renewal_attempted: bool,
) -> bool:
    """Whether the scheduler creates a renewal request now.

    Off when ``auto_renew_days`` is None. Only an active, unexpired certificate
    inside the window, with no open request for its mailbox and no earlier renewal
    of it (a failed automatic renewal is not retried every pass; reminders carry on
    and the employee or an admin renews by hand).
    """
    if auto_renew_days is None or status != ACTIVE or renewal_pending or renewal_attempted:
        return False
    if is_expired(not_after, now):
        return False
    return remaining(not_after, now) <= timedelta(days=auto_renew_days)


def request_expired(*, state: str, expires_at: datetime | None, now: datetime) -> bool:
    """A request still waiting for an approver at or after its deadline has expired."""
    return state == "pending_approval" and expires_at is not None and _utc(expires_at) <= _utc(now)


def crl_refresh_due(
    *, last_update: datetime, next_update: datetime | None, now: datetime, interval_seconds: float
) -> bool:
    """Re-sign the CRL once half its validity has passed, or sooner if the next pass would come too late.

    Relying parties must never see a CRL past its nextUpdate, so the refresh happens
    while at least two scheduler intervals remain.
    """
    if next_update is None:
        return True
    left = remaining(next_update, now)
    half = (_utc(next_update) - _utc(last_update)) / 2
    return left <= max(half, timedelta(seconds=2 * interval_seconds))


def describe_expiry(not_after: datetime, now: datetime) -> str:
    """Plain words for when a certificate expires, e.g. 'on 2026-03-01 at 14:00 UTC (in 7 days)'."""
    left = remaining(not_after, now)
    at = _utc(not_after).strftime("on %Y-%m-%d at %H:%M UTC")
    if left <= timedelta(0):
        return at + " (already expired)"
    if left < timedelta(days=1):
        return at + " (in less than a day)"
    # Rounded, so the 7-day reminder says "in 7 days" even a few minutes past the mark.
    days = round(left / timedelta(days=1))
    return at + f" (in {days} day{'s' if days != 1 else ''})"


def reminder_text(mailbox: str, not_after: datetime, now: datetime) -> str:
    return (
        f"Your S/MIME certificate for {mailbox} expires {describe_expiry(not_after, now)}. "
        "Renew it to keep signing and receiving encrypted mail; your old certificate's key stays "
        "available for reading old messages."
    )
