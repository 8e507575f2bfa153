"""The scheduler's duties, one function each: find what is due with an indexed query, decide, act.

Every query is a range over an index (``certificates (status, not_after)``,
``requests (state, expires_at)``), so a pass costs what is due, not how many
certificates exist. The decisions themselves are the pure functions of
``reminders``; the SQL only narrows the candidates.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from pipeline.clock import iso, parse_iso
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError, PolicyError
from pipeline.lifecycle.reminders import (
    crl_refresh_due,
    describe_expiry,
    is_expired,
    reminder_decision,
    reminder_text,
    request_expired,
    should_auto_renew,
)
from pipeline.lifecycle.renewal import request_renewal
from pipeline.ports import Notification, NotificationKind
from pipeline.queue import enqueue

log = logging.getLogger("certportal.scheduler")

ACTOR = "scheduler"
# Any open request for the mailbox will replace the certificate, so it counts as a pending renewal.
_RENEWAL_PENDING = (
    "EXISTS (SELECT 1 FROM requests r WHERE r.mailbox = c.mailbox "
    "AND r.state IN ('pending_approval', 'approved', 'provisioning'))"
)


def _notify(p: Pipeline, notification: Notification) -> bool:
    try:
        p.notifier.send(notification=notification)
    except CertPortalError as exc:
        log.warning("could not deliver a %s notification: %s", notification.kind, exc)
        return False
    return True


def expire_requests(p: Pipeline, now: datetime) -> int:
    """Expire requests still waiting for an approver past their deadline; tell requester and approvers."""
    rows = p.store.all(
        "SELECT * FROM requests WHERE state = 'pending_approval' AND expires_at <= ? ORDER BY expires_at", (iso(now),)
    )
    expired = 0
    for r in rows:
        deadline = parse_iso(r["expires_at"]) if r["expires_at"] else None
        if not request_expired(state=r["state"], expires_at=deadline, now=now):
            continue
        with p.store.write() as conn:
            moved = conn.execute(
                "UPDATE requests SET state = 'expired', updated_at = ? WHERE id = ? AND state = 'pending_approval'",
                (iso(now), r["id"]),
            ).rowcount
            if moved:
                p.audit.append(conn, actor=ACTOR, action="request.expired", subject=r["mailbox"], request=r["id"])
        if not moved:
            continue  # decided or cancelled meanwhile
        p.audit.anchor_latest()
        expired += 1
        _notify(
            p,
            Notification(
                kind=NotificationKind.REQUEST_EXPIRED,
                text=f"The S/MIME certificate request for {r['mailbox']} expired: no approver decided it within "
                f"{p.settings.policy.pending_days} days. Ask again if it is still needed.",
                mailbox=r["mailbox"],
                request_id=r["id"],
                slack_user_id=r["slack_user_id"],
            ),
        )
    return expired


def expire_certificates(p: Pipeline, now: datetime) -> int:
    """Mark certificates past notAfter expired; a current one is queued to leave the directory."""
    rows = p.store.all(
        "SELECT serial, request_id, mailbox, status, not_after, publish_state FROM certificates "
        "WHERE status IN ('active', 'superseded') AND not_after <= ? ORDER BY not_after",
        (iso(now),),
    )
    marked = 0
    for c in rows:
        if not is_expired(parse_iso(c["not_after"]), now):
            continue
        with p.store.write() as conn:
            moved = conn.execute(
                "UPDATE certificates SET status = 'expired', updated_at = ? WHERE serial = ? AND status = ?",
                (iso(now), c["serial"], c["status"]),
            ).rowcount
            if not moved:
                continue
            # A superseded certificate left the directory when its successor was
            # published; a current one still sits there until a publish job withdraws it.
            if c["status"] == "active" and c["publish_state"] not in ("skipped", "removed"):
                enqueue(conn, request_id=c["request_id"], kind="publish", step="publish", now=now)
            p.audit.append(conn, actor=ACTOR, action="certificate.expired", subject=c["mailbox"], serial=c["serial"])
        p.audit.anchor_latest()
        marked += 1
    return marked


def auto_renew(p: Pipeline, now: datetime) -> int:
    """Create renewal requests ``[lifecycle] auto_renew_days`` before expiry (off when unset)."""
    days = p.settings.lifecycle.auto_renew_days
    if days is None:
        return 0
    rows = p.store.all(
        f"SELECT c.serial, c.mailbox, c.status, c.not_after, {_RENEWAL_PENDING} AS renewal_pending, "  # noqa: S608
        "EXISTS (SELECT 1 FROM requests r WHERE r.predecessor_serial = c.serial) AS renewal_attempted "
        "FROM certificates c WHERE c.status = 'active' AND c.not_after > ? AND c.not_after <= ? ORDER BY c.not_after",
        (iso(now), iso(now + timedelta(days=days))),
    )
    created = 0
    for c in rows:
        if not should_auto_renew(
            status=c["status"],
            not_after=parse_iso(c["not_after"]),
            now=now,
            auto_renew_days=days,
            renewal_pending=bool(c["renewal_pending"]),
            renewal_attempted=bool(c["renewal_attempted"]),
        ):
            continue
        try:
            request = request_renewal(
                p,
                mailbox=c["mailbox"],
                requested_by=ACTOR,
                source="scheduler",
                reason=f"automatic renewal {days} days before expiry",
            )
        except PolicyError as exc:  # a request appeared meanwhile
            log.info("no automatic renewal for %s: %s", c["mailbox"], exc)
            continue
        created += 1
        if request["state"] == "pending_approval":
            _notify(
                p,
                Notification(
                    kind=NotificationKind.REQUEST_SUBMITTED,
                    text=f"Automatic renewal of the S/MIME certificate for {c['mailbox']} (expires "
                    f"{describe_expiry(parse_iso(c['not_after']), now)}) is waiting for approval.",
                    mailbox=c["mailbox"],
                    request_id=request["id"],
                    slack_user_id=request["slack_user_id"],
                ),
            )
    return created


def send_reminders(p: Pipeline, now: datetime) -> tuple[int, int]:
    """Send due reminders (one per certificate per pass); returns (sent, ledger rows recorded)."""
    thresholds = sorted(set(p.settings.lifecycle.reminder_days))
    if not thresholds:
        return 0, 0
    windows = ", ".join("(?, ?)" for _ in thresholds)
    params: list[Any] = [v for t in thresholds for v in (t, iso(now + timedelta(days=t)))]
    # Only certificates with at least one open, unrecorded window are read back.
    rows = p.store.all(
        f"WITH th(days, horizon) AS (VALUES {windows}) "  # noqa: S608
        f"SELECT c.serial, c.mailbox, c.slack_user_id, c.status, c.not_before, c.not_after, "
        f"{_RENEWAL_PENDING} AS renewal_pending FROM certificates c "
        "WHERE c.status = 'active' AND c.not_after > ? AND c.not_after <= ? AND EXISTS (SELECT 1 FROM th "
        "WHERE c.not_after <= th.horizon AND NOT EXISTS (SELECT 1 FROM reminders m "
        "WHERE m.serial = c.serial AND m.threshold_days = th.days)) ORDER BY c.not_after",
        (*params, iso(now), iso(now + timedelta(days=thresholds[-1]))),
    )
    sent = recorded = 0
    for c in rows:
        ledger = {
            r["threshold_days"]
            for r in p.store.all("SELECT threshold_days FROM reminders WHERE serial = ?", (c["serial"],))
        }
        not_after = parse_iso(c["not_after"])
        decision = reminder_decision(
            status=c["status"],
            not_before=parse_iso(c["not_before"]),
            not_after=not_after,
            now=now,
            thresholds=thresholds,
            recorded=ledger,
            renewal_pending=bool(c["renewal_pending"]),
        )
        if decision is None:
            continue
        claimed = _record(p, c["serial"], decision.record, decision.send, now)
        if not claimed:
            continue  # another pass got there first
        recorded += len(claimed)
        if decision.send is None or decision.send not in claimed:
            continue
        delivered = _notify(
            p,
            Notification(
                kind=NotificationKind.REMINDER,
                text=reminder_text(c["mailbox"], not_after, now),
                mailbox=c["mailbox"],
                serial=c["serial"],
                slack_user_id=c["slack_user_id"],
                not_after=not_after,
                extra={"threshold_days": str(decision.send)},
            ),
        )
        if delivered:
            sent += 1
        else:
            # Give the ledger rows back so the next pass tries again: a reminder
            # that could not be delivered is not lost.
            _unrecord(p, c["serial"], claimed)
            recorded -= len(claimed)
    return sent, recorded


def _record(p: Pipeline, serial: str, thresholds: tuple[int, ...], send: int | None, now: datetime) -> list[int]:
    """Insert ledger rows; returns the thresholds this call recorded (not already there)."""
    claimed: list[int] = []
    with p.store.write() as conn:
        for t in thresholds:
            cur = conn.execute(
                "INSERT INTO reminders (serial, threshold_days, recorded_at, sent) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (serial, threshold_days) DO NOTHING",
                (serial, t, iso(now), 1 if t == send else 0),
            )
            if cur.rowcount:
                claimed.append(t)
    return claimed


def _unrecord(p: Pipeline, serial: str, thresholds: list[int]) -> None:
    with p.store.write() as conn:
        conn.executemany(
            "DELETE FROM reminders WHERE serial = ? AND threshold_days = ?", [(serial, t) for t in thresholds]
        )


@runtime_checkable
class CrlIssuingCA(Protocol):
    """A CA that signs its own CRL (the embedded one); commercial CAs publish theirs themselves."""

    def crl(self) -> x509.CertificateRevocationList: ...

    def refresh_crl(self, *, force: bool) -> x509.CertificateRevocationList: ...


def refresh_crl(p: Pipeline, now: datetime) -> bool:
    """Re-sign the embedded CA's CRL before its nextUpdate; returns whether a new one was signed."""
    ca = p.ca
    if not isinstance(ca, CrlIssuingCA):
        return False
    crl = ca.crl()
    if crl_refresh_due(
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        now=now,
        interval_seconds=p.settings.scheduler.interval_seconds,
    ):
        crl = ca.refresh_crl(force=True)
    # ``crl()`` re-signs on its own past half its validity; either way a CRL
    # dated this pass is a fresh one.
    return crl.last_update_utc >= now.replace(microsecond=0)
