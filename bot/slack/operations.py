"""What the slash command, the buttons and App Home have in common: asking, renewing, links, decisions.

Each function authorizes, writes to the store (through the pipeline's domain
functions) and replies. None of them calls a CA, a vault or a directory.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from bot.slack import blocks
from bot.slack.approvers import closed_refusal, decision_refusal
from bot.slack.context import Ctx
from pipeline.certificates import current_certificate
from pipeline.clock import parse_iso
from pipeline.errors import PolicyError, RetryLater
from pipeline.lifecycle.renewal import request_renewal
from pipeline.links import create_link
from pipeline.ports import Notification, NotificationKind
from pipeline.requests import create_request, decide, get_request, open_request_for

log = logging.getLogger("certportal.slack")


def submit_request(ctx: Ctx, reason: str) -> None:
    """A new certificate for the caller's own mailbox, unless one is open or still valid."""
    mailbox = ctx.mailbox()
    open_request = open_request_for(ctx.p, mailbox)
    if open_request is not None:
        ctx.reply(_already_open(open_request))
        return
    cert = current_certificate(ctx.p, mailbox)
    if cert is not None and parse_iso(cert["not_after"]) > ctx.p.clock.now():
        ctx.reply(
            f"You already have a valid certificate for {blocks.escape(mailbox)} (serial `{cert['serial']}`, "
            f"expires {blocks.slack_date(cert['not_after'])}). `/smime password` and `/smime download` give it "
            "to you again; `/smime renew` gets a new one."
        )
        return
    profile = ctx.profile()
    try:
        request = create_request(
            ctx.p,
            mailbox=mailbox,
            requested_by=ctx.user_id,
            reason=html.unescape(reason).strip(),
            source="slack",
            slack_user_id=ctx.user_id,
            first_name=profile.first_name,
            last_name=profile.last_name,
        )
    except PolicyError:
        # Lost a race with a double submit: the other one is the request.
        again = open_request_for(ctx.p, mailbox)
        if again is None:
            raise
        ctx.reply(_already_open(again))
        return
    _ask_approvers(ctx, request)
    ctx.reply(
        f"Your request for an S/MIME certificate for {blocks.escape(mailbox)} went to the approvers. "
        "You will get a DM when it is decided."
    )


def renew(ctx: Ctx, cert: dict[str, Any] | None = None) -> None:
    """A renewal (new key) of the caller's current certificate; auto-approved when policy says so."""
    mailbox = ctx.mailbox()
    if cert is not None and not owns(ctx, cert):
        ctx.reply("That certificate is not yours, so nothing was renewed.")
        return
    open_request = open_request_for(ctx.p, mailbox)
    if open_request is not None:
        ctx.reply(_already_open(open_request))
        return
    profile = ctx.profile()
    request = request_renewal(
        ctx.p,
        mailbox=mailbox,
        requested_by=ctx.user_id,
        source="slack",
        slack_user_id=ctx.user_id,
        first_name=profile.first_name,
        last_name=profile.last_name,
    )
    if request["state"] != "pending_approval":  # auto-approved (the worker may have started already)
        ctx.reply(
            "Your renewal was approved automatically. A new certificate with a new key is being issued; "
            "you will get a DM when it is ready. Your current certificate keeps working meanwhile."
        )
        return
    _ask_approvers(ctx, request)
    ctx.reply("Your renewal request went to the approvers. You will get a DM when it is decided.")


def owns(ctx: Ctx, cert: dict[str, Any]) -> bool:
    """Whether the caller is the certificate's owner: its Slack user, or (issued outside Slack) its mailbox."""
    if cert["slack_user_id"]:
        return bool(cert["slack_user_id"] == ctx.user_id)
    return bool(cert["mailbox"] == ctx.mailbox())


def deliver_link(ctx: Ctx, cert: dict[str, Any] | None, kind: str) -> None:
    """Create a fresh one-time link and show it to the owner only (ephemeral message or modal)."""
    if cert is None:
        ctx.reply("You have no current certificate. `/smime request` asks for one.")
        return
    if not owns(ctx, cert):
        log.warning("%s asked for a %s link to certificate %s of someone else", ctx.user_id, kind, cert["serial"])
        ctx.reply("That certificate is not yours, so no link was made.")
        return
    if not (ctx.body.get("response_url") or ctx.trigger_id):
        ctx.reply("Please use the button or `/smime` command again to get a link.")
        return
    token, expires = create_link(ctx.p, kind=kind, serial=cert["serial"], owner_slack_id=ctx.user_id, actor=ctx.user_id)
    ctx.reply(*blocks.link_message(kind=kind, url=ctx.deps.link_url(token), mailbox=cert["mailbox"], expires=expires))


def decide_request(ctx: Ctx, request_id: str, *, approve: bool, note: str = "") -> str | None:
    """Decide once if the caller may; returns a refusal sentence or None when this call decided."""
    refusal = why_not_decide(ctx, get_request(ctx.p, request_id))
    if refusal:
        return refusal
    try:
        decided = decide(ctx.p, request_id=request_id, approver=ctx.user_id, approve=approve, note=note)
    except RetryLater as exc:
        # The decision is committed; only telling people failed. Say so only if it was ours.
        log.warning("decision on %s recorded but not announced: %s", request_id, exc.admin_detail)
        after = get_request(ctx.p, request_id)
        decided = after if after["approver"] == ctx.user_id else None
    if decided is None:
        after = get_request(ctx.p, request_id)
        return closed_refusal(after, ctx.p.clock.now()) or "Someone else decided this request at the same moment."
    return None


def why_not_decide(ctx: Ctx, request: dict[str, Any]) -> str | None:
    """Why the caller may not decide ``request`` now (not an approver, their own, no longer open), or None."""
    return decision_refusal(
        user_id=ctx.user_id,
        request=request,
        is_approver=ctx.deps.approvers.is_approver(ctx.user_id),
        now=ctx.p.clock.now(),
    )


def _ask_approvers(ctx: Ctx, request: dict[str, Any]) -> None:
    try:
        ctx.deps.notifier.send(
            notification=Notification(
                kind=NotificationKind.REQUEST_SUBMITTED,
                text=f"S/MIME certificate request from {request['mailbox']}",
                mailbox=request["mailbox"],
                request_id=request["id"],
                slack_user_id=request["slack_user_id"],
            )
        )
    except RetryLater as exc:
        # The request stands; `/smime pending` lists it for approvers even without the channel message.
        log.warning("approvers were not told about request %s: %s", request["id"], exc.admin_detail)


def _already_open(request: dict[str, Any]) -> str:
    state = {
        "pending_approval": "is waiting for an approver",
        "approved": "was approved and is about to be issued",
        "provisioning": "is being issued right now",
    }.get(request["state"], request["state"])
    hint = " `/smime cancel` withdraws it." if request["state"] == "pending_approval" else ""
    return f"You already have a request for {blocks.escape(request['mailbox'])} that {state}.{hint}"
