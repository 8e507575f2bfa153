"""The Notifier port for Slack: approvers hear about requests and trouble, requesters get DMs.

Approver kinds go to ``[slack] approvals_channel`` (or, with no channel set, to
each approver by DM). Requester kinds go by DM to the request's Slack user, or,
for certificates issued outside Slack, to the user whose Slack email is the
mailbox (``users.lookupByEmail``). Every message asking for a decision is
recorded so it can be rewritten without buttons once the request is decided,
cancelled or expired. Rate limits and outages raise RetryLater so the worker
tries again; a permanent Slack error (user gone, channel archived) is logged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from bot.slack.approvers import Approvers
from bot.slack.client import is_transient, slack_error
from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import RetryLater
from pipeline.ports import Notification, NotificationKind
from pipeline.settings import Settings

log = logging.getLogger("certportal.slack.notify")
K = NotificationKind
APPROVER_KINDS = frozenset({K.NEEDS_RECONCILIATION, K.PUBLISH_FAILING, K.OFFBOARDED, K.ADMIN_NOTICE})
# After these, the approvals message no longer asks for a decision.
CLOSING_KINDS = frozenset({K.REQUEST_APPROVED, K.REQUEST_DENIED, K.REQUEST_EXPIRED, K.REQUEST_CANCELLED})


class SlackNotifier:
    def __init__(self, client: WebClient, settings: Settings, approvers: Approvers) -> None:
        self.client = client
        self.settings = settings
        self.approvers = approvers
        self._p: Pipeline | None = None
        self._dm_channels: dict[str, str] = {}
        self._users_by_mailbox: dict[str, str] = {}
        self._lock = threading.Lock()

    def attach(self, p: Pipeline) -> None:
        """Give the notifier the store it records approvals messages in (the pipeline is built after it)."""
        self._p = p

    @property
    def p(self) -> Pipeline:
        assert self._p is not None, "SlackNotifier.attach(pipeline) was not called"
        return self._p

    # -- the port -------------------------------------------------------------
    def send(self, *, notification: Notification) -> None:
        try:
            self._deliver(notification)
        except (SlackApiError, OSError) as exc:
            if is_transient(exc):
                raise RetryLater(f"slack: {slack_error(exc)}", delay=_retry_after(exc)) from None
            log.warning("could not deliver %s notification: %s", notification.kind.value, slack_error(exc))

    def _deliver(self, n: Notification) -> None:
        if n.kind is K.REQUEST_SUBMITTED:
            self.post_approval_request(n.request_id)
            return
        if n.kind in APPROVER_KINDS:
            self.to_approvers(blocks.plain(blocks.escape(n.text)))
            return
        if n.kind in CLOSING_KINDS and n.request_id:
            self.close_approval_messages(n.request_id)
        if n.kind is K.REQUEST_FAILED:
            detail = n.extra.get("admin_detail") or ""
            self.to_approvers(blocks.plain(blocks.escape(f"{n.text}" + (f" (details: {detail})" if detail else ""))))
        owner = n.slack_user_id or self.user_for_mailbox(n.mailbox)
        if not owner:
            log.warning("no Slack user for %s; %s notification not delivered", n.mailbox, n.kind.value)
            return
        self.dm(owner, *self._render_for_owner(n))

    def _render_for_owner(self, n: Notification) -> blocks.Message:
        if n.kind is K.CERTIFICATE_READY:
            return blocks.certificate_ready(
                text=n.text,
                mailbox=n.mailbox,
                serial=n.serial,
                not_after=n.not_after,
                ttl_minutes=self.settings.links.ttl_minutes,
            )
        if n.kind is K.REMINDER and n.serial:
            return blocks.reminder(text=n.text, serial=n.serial)
        return blocks.plain(blocks.escape(n.text))

    # -- approvals ------------------------------------------------------------
    def post_approval_request(self, request_id: str) -> None:
        """Ask the approvers to decide; posting again for the same request does nothing."""
        request = self.p.store.one("SELECT * FROM requests WHERE id = ?", (request_id,))
        if request is None or request["state"] != "pending_approval":
            return
        if self.p.store.one("SELECT 1 AS x FROM approval_messages WHERE request_id = ?", (request_id,)):
            return
        text, body = blocks.approval_request(request)
        for channel in self._approver_channels():
            response = self.client.chat_postMessage(
                channel=channel, text=text, blocks=body, unfurl_links=False, unfurl_media=False
            )
            with self.p.store.write() as conn:
                conn.execute(
                    "INSERT INTO approval_messages (channel, ts, request_id, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (response["channel"], response["ts"], request_id, iso(self.p.clock.now())),
                )

    def close_approval_messages(self, request_id: str) -> None:
        """Rewrite every approvals message of a request to say who decided and when, without buttons."""
        request = self.p.store.one("SELECT * FROM requests WHERE id = ?", (request_id,))
        if request is None:
            return
        text, body = blocks.approval_outcome(request)
        for row in self.p.store.all("SELECT channel, ts FROM approval_messages WHERE request_id = ?", (request_id,)):
            try:
                self.client.chat_update(channel=row["channel"], ts=row["ts"], text=text, blocks=body)
            except SlackApiError as exc:
                if is_transient(exc):
                    raise
                log.warning("could not update approvals message %s: %s", row["ts"], slack_error(exc))

    def to_approvers(self, message: blocks.Message) -> None:
        text, body = message
        for channel in self._approver_channels():
            self.client.chat_postMessage(
                channel=channel, text=text, blocks=body, unfurl_links=False, unfurl_media=False
            )

    def _approver_channels(self) -> list[str]:
        channel = self.settings.slack.approvals_channel
        if channel:
            return [channel]
        people = self.approvers.everyone()
        if not people:
            log.warning("no [slack] approvals_channel and no approvers configured; approvers were not told")
        return [self.dm_channel(user) for user in people]

    # -- direct messages --------------------------------------------------------
    def dm(self, user_id: str, text: str, body: list[Any]) -> None:
        self.client.chat_postMessage(
            channel=self.dm_channel(user_id), text=text, blocks=body, unfurl_links=False, unfurl_media=False
        )

    def dm_channel(self, user_id: str) -> str:
        with self._lock:
            known = self._dm_channels.get(user_id)
        if known:
            return known
        channel = str(self.client.conversations_open(users=user_id)["channel"]["id"])
        with self._lock:
            self._dm_channels[user_id] = channel
        return channel

    def user_for_mailbox(self, mailbox: str) -> str:
        """The Slack user whose profile email is ``mailbox`` ('' when there is none)."""
        if not mailbox:
            return ""
        with self._lock:
            known = self._users_by_mailbox.get(mailbox)
        if known:
            return known
        try:
            user_id = str(self.client.users_lookupByEmail(email=mailbox)["user"]["id"])
        except SlackApiError as exc:
            if exc.response.get("error") == "users_not_found":
                return ""
            raise
        with self._lock:
            self._users_by_mailbox[mailbox] = user_id
        return user_id


def _retry_after(exc: Exception) -> float | None:
    if isinstance(exc, SlackApiError):
        value = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
        try:
            return float(value) if value else None
        except (TypeError, ValueError):
            return None
    return None
