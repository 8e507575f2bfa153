"""A notifier for running without Slack: notifications go to the log (never secrets, by construction)."""

from __future__ import annotations

import logging

from pipeline.ports import Notification

log = logging.getLogger("certportal.notify")


class ConsoleNotifier:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, *, notification: Notification) -> None:
        self.sent.append(notification)
        who = notification.mailbox or "approvers"
        log.info("[%s] to %s: %s", notification.kind.value, who, notification.text)
