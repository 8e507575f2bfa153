"""Requests: creating them under policy, deciding them exactly once, cancelling them."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import timedelta
from typing import Any

from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import NotFound, PolicyError
from pipeline.ports import Notification, NotificationKind
from pipeline.queue import enqueue
from pipeline.settings import KEY_TYPES, PolicySettings

OPEN_STATES = ("pending_approval", "approved", "provisioning")
FINAL_STATES = ("issued", "failed", "denied", "expired", "cancelled")
FIRST_STEP = "password"


def normalize_mailbox(policy: PolicySettings, mailbox: str) -> str:
    """Lower-case and check a mailbox against ``[policy] allowed_domains``. Raises PolicyError."""
    value = (mailbox or "").strip().lower()
    local, _, domain = value.rpartition("@")
    if not local or not domain or any(c.isspace() for c in value) or value.count("@") != 1:
        raise PolicyError(f"{mailbox!r} is not a mailbox address")
    if domain not in policy.allowed_domains:
        raise PolicyError(
            f"{value} is outside the allowed domains ({', '.join(policy.allowed_domains)}); "
            "CertPortal only issues certificates for the organisation's own mailboxes"
        )
    return value


def create_request(
    p: Pipeline,
    *,
    mailbox: str,
    requested_by: str,
    key_type: str | None = None,
    kind: str = "new",
    reason: str = "",
    source: str = "cli",
    slack_user_id: str = "",
    first_name: str = "",
    last_name: str = "",
    approved: bool = False,
    approver: str = "",
    predecessor_serial: str | None = None,
) -> dict[str, Any]:
    """Create a request (and, when approved, its job) in one transaction.

    Raises PolicyError for a mailbox outside the allowed domains, an unknown key
    type, or when the mailbox already has an open request.
    """
    mailbox = normalize_mailbox(p.settings.policy, mailbox)
    key_type = key_type or p.settings.crypto.key_type
    if key_type not in KEY_TYPES:
        raise PolicyError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")
    now = p.clock.now()
    request_id = secrets.token_hex(8)
    row = {
        "id": request_id,
        "kind": kind,
        "mailbox": mailbox,
        "first_name": first_name,
        "last_name": last_name,
        "slack_user_id": slack_user_id,
        "requested_by": requested_by,
        "reason": reason[:500],
        "key_type": key_type,
        "source": source,
        "state": "approved" if approved else "pending_approval",
        "predecessor_serial": predecessor_serial,
        "approver": approver or None,
        "decided_at": iso(now) if approved else None,
        "expires_at": None if approved else iso(now + timedelta(days=p.settings.policy.pending_days)),
        "created_at": iso(now),
        "updated_at": iso(now),
    }
    try:
        with p.store.write() as conn:
            conn.execute(
                f"INSERT INTO requests ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",  # noqa: S608
                row,
            )
            if approved:
                enqueue(conn, request_id=request_id, kind="provision", step=FIRST_STEP, now=now)
            p.audit.append(
                conn,
                actor=requested_by,
                action="request.created",
                subject=mailbox,
                origin=source,
                request=row["id"],
                kind=kind,
                key_type=key_type,
                approved=approved,
            )
    except sqlite3.IntegrityError:
        raise PolicyError(f"{mailbox} already has a request in progress") from None
    p.audit.anchor_latest()
    return get_request(p, request_id)


def get_request(p: Pipeline, request_id: str) -> dict[str, Any]:
    row = p.store.one("SELECT * FROM requests WHERE id = ?", (request_id,))
    if row is None:
        raise NotFound(f"no request {request_id}")
    return row


def open_request_for(p: Pipeline, mailbox: str) -> dict[str, Any] | None:
    return p.store.one(
        "SELECT * FROM requests WHERE mailbox = ? AND state IN ('pending_approval', 'approved', 'provisioning')",
        (mailbox,),
    )


def decide(p: Pipeline, *, request_id: str, approver: str, approve: bool, note: str = "") -> dict[str, Any] | None:
    """Approve or deny a pending request exactly once (compare-and-set).

    Returns the decided request, or None when it was no longer pending (already
    decided, cancelled, expired) -- a double click or replayed payload changes nothing.
    Authorisation (who may approve, not one's own request) is the caller's job.
    """
    now = p.clock.now()
    with p.store.write() as conn:
        cur = conn.execute(
            "UPDATE requests SET state = ?, approver = ?, decided_at = ?, decision_note = ?, updated_at = ? "
            "WHERE id = ? AND state = 'pending_approval'",
            ("approved" if approve else "denied", approver, iso(now), note[:500], iso(now), request_id),
        )
        if cur.rowcount != 1:
            return None
        if approve:
            enqueue(conn, request_id=request_id, kind="provision", step=FIRST_STEP, now=now)
        p.audit.append(
            conn,
            actor=approver,
            action="request.approved" if approve else "request.denied",
            subject=request_id,
            note=note[:200],
        )
    p.audit.anchor_latest()
    request = get_request(p, request_id)
    kind = NotificationKind.REQUEST_APPROVED if approve else NotificationKind.REQUEST_DENIED
    text = (
        "Your S/MIME certificate request was approved."
        if approve
        else ("Your S/MIME certificate request was denied." + (f" Reason: {note}" if note else ""))
    )
    p.notifier.send(
        notification=Notification(
            kind=kind,
            text=text,
            mailbox=request["mailbox"],
            request_id=request_id,
            slack_user_id=request["slack_user_id"],
        )
    )
    return request


def cancel(p: Pipeline, *, request_id: str, actor: str) -> dict[str, Any] | None:
    """Cancel an open request; a pending CA order is cancelled by the worker. None if not open."""
    now = p.clock.now()
    with p.store.write() as conn:
        cur = conn.execute(
            "UPDATE requests SET state = 'cancelled', updated_at = ? WHERE id = ? "
            "AND state IN ('pending_approval', 'approved', 'provisioning')",
            (iso(now), request_id),
        )
        if cur.rowcount != 1:
            return None
        order = conn.execute("SELECT order_id FROM work WHERE request_id = ?", (request_id,)).fetchone()
        if order and order["order_id"]:
            # The worker cancels the CA order: handlers never call a CA.
            enqueue(conn, request_id=request_id, kind="cancel", step="cancel_order", now=now)
        p.audit.append(conn, actor=actor, action="request.cancelled", subject=request_id)
    p.audit.anchor_latest()
    return get_request(p, request_id)
