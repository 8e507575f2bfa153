"""Parse and check the shape of a (signature-verified) Slack request body before Bolt sees it.

Slack sends slash commands as form fields, interactivity as one form field
``payload`` holding JSON, and events as JSON. Anything else, or a payload missing
what its type needs, is refused here with a reason, so a malformed request gets a
400 and never reaches a listener that would fail on it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

INTERACTIVE_TYPES = ("block_actions", "view_submission", "view_closed")
EVENT_TYPES = ("event_callback", "url_verification", "app_rate_limited")


class MalformedRequest(ValueError):
    """The body is not a Slack request this app understands; the message says what is wrong."""


def parse(body: str, content_type: str) -> dict[str, Any]:
    """The request as Bolt expects its parsed body. Raises MalformedRequest."""
    if content_type.split(";")[0].strip().lower() == "application/json" or body.lstrip().startswith("{"):
        return _event(_json_object(body, "body"))
    fields = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    if "payload" in fields:
        return _interactive(_json_object(fields["payload"], "payload"))
    if fields.get("ssl_check") == "1":
        return fields
    if "command" in fields:
        return _command(fields)
    raise MalformedRequest("not a slash command, interaction or event")


def check(body: dict[str, Any]) -> None:
    """Check an already parsed body (Socket Mode delivers them parsed). Raises MalformedRequest."""
    if "command" in body:
        _command(body)
    elif body.get("ssl_check") == "1":
        return
    elif body.get("type") in EVENT_TYPES:
        _event(body)
    else:
        _interactive(body)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise MalformedRequest(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedRequest(f"{what} is not a JSON object")
    return value


def _need_str(obj: Any, key: str, where: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value:
        raise MalformedRequest(f"{where}.{key} is missing")
    return value


def _need_dict(obj: Any, key: str, where: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, dict):
        raise MalformedRequest(f"{where}.{key} is missing")
    return value


def _command(fields: dict[str, Any]) -> dict[str, Any]:
    if not str(fields["command"]).startswith("/"):
        raise MalformedRequest("command does not start with /")
    _need_str(fields, "user_id", "command")
    fields.setdefault("text", "")
    return fields


def _interactive(payload: dict[str, Any]) -> dict[str, Any]:
    kind = _need_str(payload, "type", "payload")
    if kind not in INTERACTIVE_TYPES:
        raise MalformedRequest(f"payload type {kind} is not handled")
    _need_str(_need_dict(payload, "user", "payload"), "id", "payload.user")
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions:
            raise MalformedRequest("payload.actions is missing")
        for action in actions:
            _need_str(action, "action_id", "payload.actions[]")
            if not isinstance(action.get("value", ""), str):
                raise MalformedRequest("payload.actions[].value is not a string")
    else:
        view = _need_dict(payload, "view", "payload")
        _need_str(view, "callback_id", "payload.view")
        if not isinstance(view.get("private_metadata", ""), str):
            raise MalformedRequest("payload.view.private_metadata is not a string")
        if kind == "view_submission":
            _need_dict(_need_dict(view, "state", "payload.view"), "values", "payload.view.state")
    return payload


def _event(body: dict[str, Any]) -> dict[str, Any]:
    kind = _need_str(body, "type", "body")
    if kind not in EVENT_TYPES:
        raise MalformedRequest(f"body type {kind} is not handled")
    if kind == "url_verification":
        _need_str(body, "challenge", "body")
    elif kind == "event_callback":
        _need_str(_need_dict(body, "event", "body"), "type", "body.event")
    return body
