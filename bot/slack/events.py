"""Events: App Home opened (render it) and user_change with ``deleted: true`` (offboard the user)."""

from __future__ import annotations

import logging
from typing import Any

from bot.slack.context import SlackDeps
from bot.slack.home import publish_home
from pipeline.lifecycle.offboarding import offboard

log = logging.getLogger("certportal.slack")


def home_opened(deps: SlackDeps, event: dict[str, Any]) -> None:
    if event.get("tab", "home") == "home" and event.get("user"):
        publish_home(deps, str(event["user"]))


def user_changed(deps: SlackDeps, event: dict[str, Any]) -> None:
    """A deactivated user's certificates are revoked (affiliationChanged); replays change nothing."""
    user = event.get("user") or {}
    if not isinstance(user, dict) or not user.get("deleted") or not user.get("id"):
        return
    email = str((user.get("profile") or {}).get("email") or "")
    revoked = offboard(deps.p, slack_user_id=str(user["id"]), actor="slack:user_change", mailbox=email)
    log.info("user %s was deactivated in Slack: %d certificate(s) queued for revocation", user["id"], revoked)
