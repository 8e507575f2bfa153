"""Offboarding: a user deactivated in Slack loses every certificate they still hold.

Each unexpired certificate gets a ``revoke`` job (reason affiliationChanged); the
worker revokes it at the CA and removes it from the directory. Keys stay in the
vault for recovery of old mail. The whole decision runs in one write transaction,
so a replayed or duplicated ``user_change`` event finds the revocations already in
flight and does nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError, PolicyError
from pipeline.ports import Notification, NotificationKind, RevocationReason
from pipeline.queue import enqueue
from pipeline.requests import OPEN_STATES, cancel

log = logging.getLogger("certportal.offboarding")

REASON = RevocationReason.AFFILIATION_CHANGED


def offboard(p: Pipeline, *, slack_user_id: str, actor: str, mailbox: str = "") -> int:
    """Revoke every unexpired certificate of ``slack_user_id`` and tell the approvals channel.

    ``mailbox`` (the deactivated profile's email, when the event carries it) also
    matches certificates issued outside Slack, which have no Slack user id. Open
    requests of the user are cancelled. Returns how many revocations this call
    queued: 0 for a replayed event, which posts no second notice.

    Raises PolicyError when ``slack_user_id`` is empty.
    """
    slack_user_id = slack_user_id.strip()
    if not slack_user_id:
        raise PolicyError("offboarding needs the Slack user id of the deactivated user")
    mailbox = mailbox.strip().lower()
    now = p.clock.now()
    queued: list[dict[str, Any]] = []
    with p.store.write() as conn:
        owner, params = _owner_clause(slack_user_id, mailbox)
        rows = conn.execute(
            f"SELECT serial, request_id, mailbox FROM certificates WHERE {owner} "  # noqa: S608
            "AND status IN ('active', 'superseded') AND not_after > ? ORDER BY not_after",
            (*params, iso(now)),
        ).fetchall()
        for row in rows:
            before = conn.total_changes
            # One revoke job per certificate: an in-flight one is left alone, so a
            # replayed event changes nothing.
            enqueue(
                conn,
                request_id=row["request_id"],
                kind="revoke",
                step="revoke",
                now=now,
                payload={"serial": row["serial"], "reason": REASON.value, "actor": actor, "origin": "offboarding"},
            )
            if conn.total_changes == before:
                continue
            p.audit.append(
                conn,
                actor=actor,
                action="certificate.revocation_requested",
                subject=row["mailbox"],
                origin="offboarding",
                serial=row["serial"],
                reason=REASON.value,
                slack_user=slack_user_id,
            )
            queued.append(dict(row))
    p.audit.anchor_latest()
    cancelled = _cancel_open_requests(p, slack_user_id=slack_user_id, mailbox=mailbox, actor=actor)
    if queued or cancelled:
        _tell_approvers(p, slack_user_id=slack_user_id, mailbox=mailbox, queued=queued, cancelled=cancelled)
    return len(queued)


def _owner_clause(slack_user_id: str, mailbox: str) -> tuple[str, tuple[str, ...]]:
    if mailbox:
        return "(slack_user_id = ? OR mailbox = ?)", (slack_user_id, mailbox)
    return "slack_user_id = ?", (slack_user_id,)


def _cancel_open_requests(p: Pipeline, *, slack_user_id: str, mailbox: str, actor: str) -> list[str]:
    owner, params = _owner_clause(slack_user_id, mailbox)
    marks = ",".join("?" * len(OPEN_STATES))
    rows = p.store.all(
        f"SELECT id, mailbox FROM requests WHERE {owner} AND state IN ({marks})",  # noqa: S608
        (*params, *OPEN_STATES),
    )
    return [r["mailbox"] for r in rows if cancel(p, request_id=r["id"], actor=actor) is not None]


def _tell_approvers(
    p: Pipeline, *, slack_user_id: str, mailbox: str, queued: list[dict[str, Any]], cancelled: list[str]
) -> None:
    mailboxes = sorted({r["mailbox"] for r in queued} | set(cancelled) | ({mailbox} if mailbox else set()))
    who = f"Slack user {slack_user_id}" + (f" ({', '.join(mailboxes)})" if mailboxes else "")
    parts = [f"{who} was deactivated."]
    if queued:
        serials = ", ".join(r["serial"] for r in queued)
        parts.append(
            f"Revoking {len(queued)} certificate{'s' if len(queued) != 1 else ''} ({serials}; reason "
            f"{REASON.value}) and removing {'them' if len(queued) != 1 else 'it'} from the directory. "
            "The keys stay archived for recovery of old mail."
        )
    if cancelled:
        parts.append(f"Cancelled {len(cancelled)} open request{'s' if len(cancelled) != 1 else ''}.")
    try:
        p.notifier.send(
            notification=Notification(
                kind=NotificationKind.OFFBOARDED,
                text=" ".join(parts),
                mailbox=mailboxes[0] if len(mailboxes) == 1 else "",
                slack_user_id=slack_user_id,
                extra={"serials": ",".join(r["serial"] for r in queued), "reason": REASON.value},
            )
        )
    except CertPortalError:
        # The revocations are queued and audited; a lost notice must not undo them.
        log.warning("could not post the offboarding notice for %s", slack_user_id)
