"""``/smime``: the ack answers at once (help needs nothing else); the rest runs after the ack.

Subcommands: help, request [reason], status, password, download, renew, revoke
[@user], cancel, and for approvers pending. Unknown subcommands print help.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack
from slack_sdk.models.blocks import ActionsBlock, Block

from bot.slack import blocks, operations
from bot.slack.context import Ctx
from bot.slack.profile import fetch_profile, mailbox_for
from bot.slack.views import APPROVER_REASONS, SUBSCRIBER_REASONS, revoke_view
from pipeline.certificates import current_certificate, earlier_certificates
from pipeline.clock import iso
from pipeline.ports import Notification, NotificationKind
from pipeline.requests import cancel, open_request_for
from pipeline.settings import PolicySettings

MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def parse(text: str) -> tuple[str, str]:
    """(subcommand, the rest) from the command text; '' when empty."""
    head, _, rest = (text or "").strip().partition(" ")
    return head.lower(), rest.strip()


def wants_help(command: dict[str, Any]) -> bool:
    """help, nothing, or a subcommand we do not know: all answered with the help text."""
    return parse(command.get("text", ""))[0] not in HANDLERS


def ack_help(ack: Ack) -> None:
    ack(text=blocks.HELP, response_type="ephemeral")


def ack_command(ack: Ack) -> None:
    ack()


def run_command(ctx: Ctx) -> None:
    name, rest = parse(str(ctx.body.get("text") or ""))
    handler = HANDLERS.get(name)
    if handler is not None:
        handler(ctx, rest)


def request(ctx: Ctx, rest: str) -> None:
    operations.submit_request(ctx, rest)


def status(ctx: Ctx, rest: str) -> None:
    mailbox = ctx.mailbox()
    cert = current_certificate(ctx.p, mailbox)
    text = blocks.status_text(mailbox=mailbox, cert=cert, request=open_request_for(ctx.p, mailbox))
    body: list[Block] = [blocks.section(text)]
    if cert:
        body.append(
            ActionsBlock(block_id=f"status:{cert['serial']}", elements=blocks.certificate_buttons(cert["serial"]))
        )
    ctx.reply(text, body + blocks.history(earlier_certificates(ctx.p, mailbox)))


def password(ctx: Ctx, rest: str) -> None:
    operations.deliver_link(ctx, current_certificate(ctx.p, ctx.mailbox()), "password")


def download(ctx: Ctx, rest: str) -> None:
    operations.deliver_link(ctx, current_certificate(ctx.p, ctx.mailbox()), "pfx")


def renew(ctx: Ctx, rest: str) -> None:
    operations.renew(ctx)


def revoke(ctx: Ctx, rest: str) -> None:
    mention = MENTION.search(rest)
    channel = str(ctx.body.get("channel_id") or "")
    if mention and mention.group(1) != ctx.user_id:
        if not ctx.deps.approvers.is_approver(ctx.user_id):
            ctx.reply("Only approvers can revoke someone else's certificate. `/smime revoke` revokes your own.")
            return
        target = mention.group(1)
        mailbox = mailbox_for(fetch_profile(ctx.client, target), _lenient(ctx))
        cert = current_certificate(ctx.p, mailbox)
        if cert is None:
            ctx.reply(f"<@{target}> has no current certificate.")
            return
        ctx.open_modal(revoke_view(cert=cert, owner=target, reasons=APPROVER_REASONS, channel=channel))
        return
    cert = current_certificate(ctx.p, ctx.mailbox())
    if cert is None:
        ctx.reply("You have no current certificate to revoke.")
        return
    ctx.open_modal(revoke_view(cert=cert, owner=ctx.user_id, reasons=SUBSCRIBER_REASONS, channel=channel))


def cancel_request(ctx: Ctx, rest: str) -> None:
    mailbox = ctx.mailbox()
    open_request = open_request_for(ctx.p, mailbox)
    if open_request is None:
        ctx.reply("You have no open request to cancel.")
        return
    cancelled = cancel(ctx.p, request_id=open_request["id"], actor=ctx.user_id)
    if cancelled is None:
        ctx.reply("That request was decided or finished a moment ago, so it could not be cancelled.")
        return
    ctx.deps.notifier.send(
        notification=Notification(
            kind=NotificationKind.REQUEST_CANCELLED,
            text=f"Your S/MIME certificate request for {mailbox} was cancelled.",
            mailbox=mailbox,
            request_id=cancelled["id"],
            slack_user_id=ctx.user_id,
        )
    )
    ctx.reply(f"Your request for {blocks.escape(mailbox)} was cancelled; nothing will be issued.")


def pending(ctx: Ctx, rest: str) -> None:
    if not ctx.deps.approvers.is_approver(ctx.user_id):
        ctx.reply("Only approvers can list pending requests.")
        return
    rows = ctx.p.store.all(
        "SELECT * FROM requests WHERE state = 'pending_approval' AND (expires_at IS NULL OR expires_at > ?) "
        "ORDER BY created_at",
        (iso(ctx.p.clock.now()),),
    )
    ctx.reply(*blocks.pending_list(rows))


def _lenient(ctx: Ctx) -> PolicySettings:
    """An approver acting on someone else finds their mailbox whatever kind of account they are now."""
    return dataclasses.replace(ctx.p.settings.policy, allow_guests=True, allow_bots=True, allow_deactivated=True)


HANDLERS: dict[str, Callable[[Ctx, str], None]] = {
    "request": request,
    "status": status,
    "password": password,
    "download": download,
    "renew": renew,
    "revoke": revoke,
    "cancel": cancel_request,
    "pending": pending,
}
