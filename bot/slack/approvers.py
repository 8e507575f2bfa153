"""Who may decide requests: configured user ids and/or the members of one Slack user group.

``decision_refusal`` is the pure rule (tested exhaustively); ``Approvers`` knows
the members, caching the user group for a minute so a burst of clicks costs one
``usergroups.users.list`` call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.client import slack_error
from pipeline.clock import parse_iso
from pipeline.settings import SlackSettings

log = logging.getLogger("certportal.slack")
GROUP_CACHE_SECONDS = 60.0


def decision_refusal(*, user_id: str, request: dict[str, Any], is_approver: bool, now: datetime) -> str | None:
    """Why ``user_id`` may not decide ``request`` now, or None when they may."""
    if not is_approver:
        return "Only CertPortal approvers can approve or deny requests, so nothing was changed."
    if user_id in (request.get("slack_user_id"), request.get("requested_by")):
        return "You cannot decide your own request; another approver has to."
    return closed_refusal(request, now)


def closed_refusal(request: dict[str, Any], now: datetime) -> str | None:
    """Why nobody can decide ``request`` any more (decided, cancelled, expired), or None while it is open."""
    state = request.get("state")
    if state != "pending_approval":
        approver = request.get("approver") or ""
        who = f" by <@{approver}>" if approver.startswith(("U", "W")) else ""
        return f"This request is no longer pending: it was {_state_words(state)}{who}."
    expires = request.get("expires_at")
    if expires and parse_iso(expires) <= now:
        return "This request has expired; the requester can ask again with `/smime request`."
    return None


def _state_words(state: Any) -> str:
    return {
        "approved": "approved",
        "provisioning": "approved",
        "issued": "approved",
        "failed": "approved (and then failed)",
        "denied": "denied",
        "expired": "left to expire",
        "cancelled": "cancelled by the requester",
    }.get(str(state), str(state))


class Approvers:
    def __init__(
        self, slack: SlackSettings, client: WebClient, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.slack = slack
        self.client = client
        self._monotonic = monotonic
        self._group: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def is_approver(self, user_id: str) -> bool:
        return user_id in self.slack.approvers or user_id in self.group_members()

    def everyone(self) -> list[str]:
        """Configured approvers first, then group members, without duplicates."""
        seen = dict.fromkeys(self.slack.approvers)
        seen.update(dict.fromkeys(sorted(self.group_members())))
        return list(seen)

    def group_members(self) -> frozenset[str]:
        if not self.slack.approver_group:
            return frozenset()
        with self._lock:
            fresh = self._fetched_at is not None and self._monotonic() - self._fetched_at < GROUP_CACHE_SECONDS
            if fresh:
                return self._group
            try:
                response = self.client.usergroups_users_list(usergroup=self.slack.approver_group)
            except (SlackApiError, OSError) as exc:
                # Keep the last known members: a Slack hiccup must not lock every approver out.
                log.warning("could not list approver group %s: %s", self.slack.approver_group, slack_error(exc))
                return self._group
            self._group = frozenset(response.get("users") or [])
            self._fetched_at = self._monotonic()
            return self._group
