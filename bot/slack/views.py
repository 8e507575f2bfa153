"""Modals: the reason for a denial, and revocation with its RFC 5280 reason."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    InputBlock,
    Option,
    PlainTextInputElement,
    RadioButtonsElement,
)
from slack_sdk.models.views import View

from bot.slack import blocks

DENY_VIEW = "deny_request_modal"
REVOKE_VIEW = "revoke_certificate_modal"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"

SUBSCRIBER_REASONS = {
    "keyCompromise": "My key or password may be known to someone else (key compromise)",
    "cessationOfOperation": "I no longer need this certificate",
}
APPROVER_REASONS = {
    **SUBSCRIBER_REASONS,
    "affiliationChanged": "The person has left or changed role (affiliation changed)",
}


def deny_view(*, request: dict[str, Any], channel: str) -> View:
    return View(
        type="modal",
        callback_id=DENY_VIEW,
        private_metadata=json.dumps({"request_id": request["id"], "channel": channel}),
        title="Deny request",
        submit="Deny",
        close="Cancel",
        blocks=[
            blocks.section(f"Deny the S/MIME certificate request of *{blocks.escape(request['mailbox'])}*?"),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason (sent to the requester)",
                element=PlainTextInputElement(action_id=REASON_ACTION, multiline=True, max_length=500),
            ),
        ],
    )


def revoke_view(*, cert: dict[str, Any], owner: str, reasons: dict[str, str], channel: str = "") -> View:
    return View(
        type="modal",
        callback_id=REVOKE_VIEW,
        private_metadata=json.dumps({"serial": cert["serial"], "owner": owner, "channel": channel}),
        title="Revoke certificate",
        submit="Revoke",
        close="Cancel",
        blocks=[
            blocks.section(
                f"Revoke certificate `{cert['serial']}` of *{blocks.escape(cert['mailbox'])}* "
                f"(expires {blocks.slack_date(cert['not_after'])})? Mail clients stop trusting it at once and "
                "this cannot be undone. Old encrypted mail stays readable: IT keeps the key."
            ),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Why?",
                element=RadioButtonsElement(
                    action_id=REASON_ACTION,
                    options=[Option(value=value, label=label) for value, label in reasons.items()],
                ),
            ),
        ],
    )


def metadata(body: dict[str, Any]) -> dict[str, str]:
    """The private_metadata of a submitted view, {} when absent or not ours."""
    try:
        value = json.loads(body["view"].get("private_metadata") or "{}")
    except (KeyError, TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def submitted(body: dict[str, Any], block_id: str = REASON_BLOCK, action_id: str = REASON_ACTION) -> str:
    """The value of one input of a submitted view ('' when missing)."""
    values = (body.get("view") or {}).get("state", {}).get("values", {})
    field = (values.get(block_id) or {}).get(action_id) or {}
    if field.get("type") == "radio_buttons":
        return str((field.get("selected_option") or {}).get("value") or "")
    return str(field.get("value") or "").strip()
