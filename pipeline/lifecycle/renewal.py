"""Renewal: always a new key and a new order; the predecessor stays valid and retrievable."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.certificates import current_certificate
from pipeline.clock import parse_iso
from pipeline.context import Pipeline
from pipeline.errors import PolicyError
from pipeline.lifecycle.reminders import is_expired
from pipeline.requests import create_request, normalize_mailbox


def auto_approvable(*, policy_allows: bool, status: str | None, not_after: datetime | None, now: datetime) -> bool:
    """Pure rule: with the policy on, a renewal of a still-valid, active certificate needs no approver."""
    return bool(policy_allows and status == "active" and not_after is not None and not is_expired(not_after, now))


def may_auto_approve(p: Pipeline, current: dict[str, Any] | None) -> bool:
    """``[policy] auto_approve_renewals`` covers renewals of a still-valid certificate of the same mailbox."""
    return auto_approvable(
        policy_allows=p.settings.policy.auto_approve_renewals,
        status=current["status"] if current else None,
        not_after=parse_iso(current["not_after"]) if current else None,
        now=p.clock.now(),
    )


def request_renewal(
    p: Pipeline,
    *,
    mailbox: str,
    requested_by: str,
    source: str,
    slack_user_id: str = "",
    reason: str = "",
    key_type: str | None = None,
    first_name: str = "",
    last_name: str = "",
) -> dict[str, Any]:
    """Create a renewal request for ``mailbox``'s current certificate, approved when policy allows.

    Raises PolicyError when there is nothing to renew or a request is already open.
    """
    mailbox = normalize_mailbox(p.settings.policy, mailbox)
    current = current_certificate(p, mailbox)
    if current is None:
        raise PolicyError(f"{mailbox} has no current certificate to renew; request a new one instead")
    approved = may_auto_approve(p, current)
    previous = p.store.one("SELECT first_name, last_name FROM requests WHERE id = ?", (current["request_id"],)) or {}
    return create_request(
        p,
        mailbox=mailbox,
        kind="renew",
        requested_by=requested_by,
        source=source,
        reason=reason or "renewal",
        key_type=key_type or current["key_type"],
        slack_user_id=slack_user_id or current["slack_user_id"],
        first_name=first_name or previous.get("first_name", ""),
        last_name=last_name or previous.get("last_name", ""),
        approved=approved,
        approver="policy:auto_approve_renewals" if approved else "",
        predecessor_serial=current["serial"],
    )
