"""Block Kit messages, each returned with its plain-text fallback. Nothing here ever holds a secret."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    LinkButtonElement,
    MarkdownTextObject,
    SectionBlock,
)

from pipeline.clock import parse_iso

# action_id values: the contract between the messages and the handlers.
APPROVE = "approve_request"
DENY = "deny_request"
SHOW_PASSWORD = "show_password"  # noqa: S105 - an action id, not a password
DOWNLOAD = "download_certificate"
RENEW = "renew_certificate"
REQUEST = "request_certificate"
OPEN_LINK = "open_link"

Message = tuple[str, list[Block]]

HELP = (
    "*CertPortal* gives you an S/MIME certificate for your work mailbox.\n"
    "`/smime request [reason]` ask for a certificate (an IT approver decides)\n"
    "`/smime status` your certificate and any open request\n"
    "`/smime password` a one-time link to your certificate's password\n"
    "`/smime download` a one-time link to your certificate file (PFX)\n"
    "`/smime renew` a new certificate with a new key before the current one expires\n"
    "`/smime revoke` revoke your certificate (lost device, no longer needed)\n"
    "`/smime cancel` withdraw your open request\n"
    "`/smime pending` requests waiting for a decision (approvers)\n"
    "`/smime help` this help"
)


def escape(text: str) -> str:
    """Text a person typed, safe inside mrkdwn (no mentions, links or @channel)."""
    plain = html.unescape(text or "")
    return plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_date(when: str | datetime | None) -> str:
    """A date Slack shows in the reader's time zone, with a UTC fallback."""
    if when is None or when == "":
        return "-"
    moment = parse_iso(when) if isinstance(when, str) else when
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text[:3000]))


def plain(text: str) -> Message:
    return text, [section(text)]


def _request_fields(request: dict[str, Any]) -> SectionBlock:
    name = " ".join(x for x in (request.get("first_name"), request.get("last_name")) if x)
    who = f"<@{request['slack_user_id']}>" if request.get("slack_user_id") else escape(request["requested_by"])
    kind = "renewal" if request.get("kind") == "renew" else "new certificate"
    return SectionBlock(
        fields=[
            MarkdownTextObject(text=f"*Requester*\n{who}" + (f" ({escape(name)})" if name else "")),
            MarkdownTextObject(text=f"*Mailbox*\n{escape(request['mailbox'])}"),
            MarkdownTextObject(text=f"*Kind*\n{kind}"),
            MarkdownTextObject(text=f"*Reason*\n{escape(request.get('reason') or '-')}"),
        ]
    )


def approval_request(request: dict[str, Any]) -> Message:
    text = f"S/MIME certificate request from {request['mailbox']}: approve or deny."
    blocks: list[Block] = [
        HeaderBlock(text="S/MIME certificate request"),
        _request_fields(request),
        ActionsBlock(
            block_id=f"decide:{request['id']}",
            elements=[
                ButtonElement(text="Approve", action_id=APPROVE, value=request["id"], style="primary"),
                ButtonElement(text="Deny", action_id=DENY, value=request["id"], style="danger"),
            ],
        ),
        ContextBlock(
            elements=[
                MarkdownTextObject(text=f"Request {request['id']} · expires {slack_date(request.get('expires_at'))}")
            ]
        ),
    ]
    return text, blocks


def approval_outcome(request: dict[str, Any]) -> Message:
    """The approvals message after the fact: who decided and when, and no buttons."""
    state = request["state"]
    approver = request.get("approver") or ""
    by = f"<@{approver}>" if approver[:1] in ("U", "W") else escape(approver or "policy")
    when = slack_date(request.get("decided_at") or request.get("updated_at"))
    if state == "denied":
        outcome = f":no_entry: Denied by {by} on {when}."
        note = request.get("decision_note") or ""
        if note:
            outcome += f" Reason: {escape(note)}"
    elif state == "cancelled":
        outcome = f":heavy_minus_sign: Cancelled by the requester on {slack_date(request.get('updated_at'))}."
    elif state == "expired":
        outcome = f":hourglass: Expired without a decision on {slack_date(request.get('updated_at'))}."
    else:
        outcome = f":white_check_mark: Approved by {by} on {when}."
    text = f"S/MIME certificate request from {request['mailbox']}: {_plain(outcome)}"
    return text, [HeaderBlock(text="S/MIME certificate request"), _request_fields(request), section(outcome)]


def _plain(outcome: str) -> str:
    return outcome.split(": ", 1)[-1] if outcome.startswith(":") else outcome


def certificate_ready(*, text: str, mailbox: str, serial: str, not_after: datetime | None, ttl_minutes: int) -> Message:
    body = (
        f":white_check_mark: Your S/MIME certificate for *{escape(mailbox)}* is ready "
        f"(serial `{serial}`, expires {slack_date(not_after)}).\n"
        f"Each button gives you a private one-time link that works once, for {ttl_minutes} minutes. "
        "Install the file in your mail client with the password."
    )
    escrow = "IT keeps an encrypted copy of your private key so your encrypted mail can be recovered if you lose it."
    return text, [
        section(body),
        ContextBlock(elements=[MarkdownTextObject(text=escrow)]),
        ActionsBlock(block_id=f"cert:{serial}", elements=certificate_buttons(serial)),
    ]


def certificate_buttons(serial: str) -> list[ButtonElement]:
    return [
        ButtonElement(text="Show my password", action_id=SHOW_PASSWORD, value=serial, style="primary"),
        ButtonElement(text="Download certificate", action_id=DOWNLOAD, value=serial),
    ]


def reminder(*, text: str, serial: str) -> Message:
    return text, [
        section(escape(text)),
        ActionsBlock(
            block_id=f"renew:{serial}",
            elements=[ButtonElement(text="Renew now", action_id=RENEW, value=serial, style="primary")],
        ),
    ]


def link_message(*, kind: str, url: str, mailbox: str, expires: datetime) -> Message:
    what = "the password of your certificate" if kind == "password" else "your certificate file (PFX)"
    label = "Open password page" if kind == "password" else "Open download page"
    body = (
        f"Here is a one-time link to {what} for *{escape(mailbox)}*. "
        f"It works once and expires {slack_date(expires)}. Only you can see this message."
    )
    text = f"Your one-time link to {what} is ready; it works once and expires soon."
    return text, [section(body), ActionsBlock(elements=[LinkButtonElement(text=label, url=url, action_id=OPEN_LINK)])]


def pending_list(requests: list[dict[str, Any]]) -> Message:
    if not requests:
        return plain("No requests are waiting for a decision.")
    blocks: list[Block] = [section(f"*{len(requests)} request(s) waiting for a decision*")]
    for r in requests[:15]:
        blocks.append(_request_fields(r))
        blocks.append(
            ActionsBlock(
                block_id=f"pending:{r['id']}",
                elements=[
                    ButtonElement(text="Approve", action_id=APPROVE, value=r["id"], style="primary"),
                    ButtonElement(text="Deny", action_id=DENY, value=r["id"], style="danger"),
                ],
            )
        )
    if len(requests) > 15:
        blocks.append(section(f"... and {len(requests) - 15} more in the approvals channel."))
    return f"{len(requests)} request(s) waiting for a decision.", blocks


def status_text(*, mailbox: str, cert: dict[str, Any] | None, request: dict[str, Any] | None) -> str:
    lines = [f"*Mailbox:* {escape(mailbox)}"]
    if cert:
        lines.append(
            f"*Certificate:* serial `{cert['serial']}`, {cert['status']}, expires {slack_date(cert['not_after'])}"
        )
    else:
        lines.append("*Certificate:* none yet (`/smime request` asks for one)")
    if request:
        lines.append(
            f"*Open request:* {request['kind']} request {request['id']}, {request['state'].replace('_', ' ')} "
            f"since {slack_date(request['created_at'])}"
        )
    return "\n".join(lines)


def history(certs: list[dict[str, Any]]) -> list[Block]:
    """Earlier certificates, each with its own one-time-link buttons (revoked ones have none)."""
    if not certs:
        return []
    body: list[Block] = [section("*Earlier certificates* — their keys still open mail that was encrypted to them:")]
    for cert in certs:
        line = f"`{cert['serial']}` {cert['status']}, valid until {slack_date(cert['not_after'])}"
        if cert["status"] == "revoked":
            body.append(section(line + " — revoked, no longer handed out"))
            continue
        body.append(section(line))
        body.append(ActionsBlock(block_id=f"history:{cert['serial']}", elements=certificate_buttons(cert["serial"])))
    return body
