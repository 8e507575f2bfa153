"""Buttons and modal submissions: approve, deny (with its reason modal), links, renew, revoke, App Home."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack

from bot.slack import blocks, operations
from bot.slack.context import Ctx
from bot.slack.home import publish_home
from bot.slack.views import deny_view, metadata, submitted
from pipeline.certificates import certificate
from pipeline.errors import PolicyError
from pipeline.ports import RevocationReason
from pipeline.requests import get_request
from pipeline.revocations import request_revocation

log = logging.getLogger("certportal.slack")


def action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def ack_only(ack: Ack) -> None:
    ack()


def approve(ctx: Ctx) -> None:
    refusal = operations.decide_request(ctx, action_value(ctx.body), approve=True)
    _after_decision(ctx, refusal, "Approved.")


def deny(ctx: Ctx) -> None:
    """Check first, then ask for the reason; the decision happens when the modal is submitted."""
    request = get_request(ctx.p, action_value(ctx.body))
    refusal = operations.why_not_decide(ctx, request)
    if refusal:
        ctx.reply(refusal)
        return
    channel = str((ctx.body.get("container") or {}).get("channel_id") or "")
    ctx.open_modal(deny_view(request=request, channel=channel))


def ack_deny_submission(ack: Ack, body: dict[str, Any]) -> None:
    if not submitted(body):
        ack(response_action="errors", errors={"reason": "Tell the requester why, in a sentence."})
        return
    ack()


def deny_submitted(ctx: Ctx) -> None:
    # The slow half runs even when the ack refused the submission: check again.
    reason = submitted(ctx.body)
    if not reason:
        return
    meta = metadata(ctx.body)
    refusal = operations.decide_request(ctx, meta.get("request_id", ""), approve=False, note=reason)
    if refusal:
        _tell_privately(ctx, meta.get("channel", ""), refusal)


def show_password(ctx: Ctx) -> None:
    operations.deliver_link(ctx, _certificate_or_none(ctx), "password")


def download_certificate(ctx: Ctx) -> None:
    operations.deliver_link(ctx, _certificate_or_none(ctx), "pfx")


def renew_certificate(ctx: Ctx) -> None:
    cert = _certificate_or_none(ctx)
    if cert is None:
        ctx.reply("That certificate no longer exists; `/smime status` shows what you have.")
        return
    operations.renew(ctx, cert)
    _refresh_home(ctx)


def request_certificate(ctx: Ctx) -> None:
    operations.submit_request(ctx, "")
    _refresh_home(ctx)


def ack_revoke_submission(ack: Ack, body: dict[str, Any]) -> None:
    if not submitted(body):
        ack(response_action="errors", errors={"reason": "Choose a reason."})
        return
    ack()


def revoke_submitted(ctx: Ctx) -> None:
    meta = metadata(ctx.body)
    reason_text = submitted(ctx.body)
    if not reason_text:
        return
    cert = certificate(ctx.p, meta.get("serial", ""))
    mine = operations.owns(ctx, cert)
    if not mine and not ctx.deps.approvers.is_approver(ctx.user_id):
        _tell_privately(ctx, meta.get("channel", ""), "Only the owner or an approver can revoke that certificate.")
        return
    allowed = {"keyCompromise", "cessationOfOperation"} | (set() if mine else {"affiliationChanged"})
    if reason_text not in allowed:
        raise PolicyError("That revocation reason is not offered here.")
    queued = request_revocation(
        ctx.p, serial=cert["serial"], reason=RevocationReason(reason_text), actor=ctx.user_id, origin="slack"
    )
    if not queued:
        text = f"Certificate `{cert['serial']}` was already revoked."
    elif mine:
        text = f"Certificate `{cert['serial']}` is being revoked; you will get a DM when it is done."
    else:
        text = f"Certificate `{cert['serial']}` of {cert['mailbox']} is being revoked; its owner will be told."
    _tell_privately(ctx, meta.get("channel", ""), text)


def _certificate_or_none(ctx: Ctx) -> dict[str, Any] | None:
    return ctx.p.store.one("SELECT * FROM certificates WHERE serial = ?", (action_value(ctx.body),))


def _after_decision(ctx: Ctx, refusal: str | None, done: str) -> None:
    container = ctx.body.get("container") or {}
    if refusal:
        ctx.reply(refusal)
    elif container.get("is_ephemeral") and ctx.body.get("response_url"):
        # A click in the `/smime pending` list: the list entry itself says what happened.
        ctx.respond(text=done, replace_original=True)


def _tell_privately(ctx: Ctx, channel: str, text: str) -> None:
    """After a modal closes there is no response_url: an ephemeral in the channel it came from, else a DM."""
    if channel:
        try:
            ctx.client.chat_postEphemeral(channel=channel, user=ctx.user_id, text=text)
            return
        except Exception as exc:  # not in that channel any more: fall back to a DM
            log.info("ephemeral to %s in %s failed (%s); sending a DM", ctx.user_id, channel, type(exc).__name__)
    ctx.deps.notifier.dm(ctx.user_id, *blocks.plain(text))


def _refresh_home(ctx: Ctx) -> None:
    if (ctx.body.get("container") or {}).get("type") == "view" and ctx.body.get("view", {}).get("type") == "home":
        publish_home(ctx.deps, ctx.user_id)
