"""App Home: the user's current certificate, any open request, and the same buttons as the ready DM."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, DividerBlock, HeaderBlock, SectionBlock
from slack_sdk.models.blocks import MarkdownTextObject as Md
from slack_sdk.models.views import View

from bot.slack import blocks
from bot.slack.context import SlackDeps
from bot.slack.profile import fetch_profile, mailbox_for
from pipeline.certificates import current_certificate, earlier_certificates
from pipeline.errors import PolicyError
from pipeline.requests import open_request_for

log = logging.getLogger("certportal.slack")


def home_view(
    *,
    mailbox: str,
    cert: dict[str, Any] | None,
    request: dict[str, Any] | None,
    refusal: str = "",
    earlier: list[dict[str, Any]] | None = None,
) -> View:
    body: list[Block] = [HeaderBlock(text="Your S/MIME certificate")]
    if refusal:
        body.append(blocks.section(blocks.escape(refusal)))
        return View(type="home", blocks=body)
    if cert:
        body.append(
            SectionBlock(
                fields=[
                    Md(text=f"*Mailbox*\n{blocks.escape(mailbox)}"),
                    Md(text=f"*Serial*\n`{cert['serial']}`"),
                    Md(text=f"*Expires*\n{blocks.slack_date(cert['not_after'])}"),
                    Md(text=f"*Status*\n{cert['status']}"),
                ]
            )
        )
        buttons = blocks.certificate_buttons(cert["serial"])
        if request is None:
            buttons.append(ButtonElement(text="Renew now", action_id=blocks.RENEW, value=cert["serial"]))
        body.append(ActionsBlock(block_id=f"home:{cert['serial']}", elements=buttons))
        body.append(
            blocks.section(
                "Each button gives you a private one-time link. IT keeps an encrypted copy of your key for recovery."
            )
        )
    else:
        body.append(blocks.section(f"You have no certificate for {blocks.escape(mailbox)} yet."))
        if request is None:
            body.append(
                ActionsBlock(
                    block_id="home:request",
                    elements=[
                        ButtonElement(
                            text="Request a certificate", action_id=blocks.REQUEST, value="new", style="primary"
                        )
                    ],
                )
            )
    if request:
        body.append(DividerBlock())
        body.append(
            blocks.section(
                f"*Open request:* {request['kind']} request {request['id']}, "
                f"{request['state'].replace('_', ' ')} since {blocks.slack_date(request['created_at'])}. "
                "`/smime cancel` withdraws it."
            )
        )
    if earlier:
        body.append(DividerBlock())
        body.extend(blocks.history(earlier))
    body.append(blocks.section("`/smime help` lists everything CertPortal can do."))
    return View(type="home", blocks=body)


def publish_home(deps: SlackDeps, user_id: str) -> None:
    """Render and publish App Home for ``user_id`` (a users.info and a views.publish call)."""
    profile = fetch_profile(deps.client, user_id)
    try:
        mailbox = mailbox_for(profile, deps.p.settings.policy)
    except PolicyError as exc:
        view = home_view(mailbox="", cert=None, request=None, refusal=str(exc))
    else:
        view = home_view(
            mailbox=mailbox,
            cert=current_certificate(deps.p, mailbox),
            request=open_request_for(deps.p, mailbox),
            earlier=earlier_certificates(deps.p, mailbox),
        )
    deps.client.views_publish(user_id=user_id, view=view)
