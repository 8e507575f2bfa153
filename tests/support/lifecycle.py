"""Helpers the lifecycle tests share: an in-process directory and one-call issuance."""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.certificates import current_certificate
from pipeline.context import Pipeline
from pipeline.drive import run_until_settled
from pipeline.requests import create_request


class RecordingDirectory:
    """An in-process directory holding each mailbox's certificate fingerprints."""

    name = "recording"

    def __init__(self) -> None:
        self.values: dict[str, set[str]] = {}

    def check(self) -> list[str]:
        return []

    def publish(self, *, mailbox: str, certificate_der: bytes, removable_sha256: frozenset[str]) -> None:
        held = self.values.setdefault(mailbox, set())
        held -= removable_sha256
        held.add(hashlib.sha256(certificate_der).hexdigest())

    def unpublish(self, *, mailbox: str, removable_sha256: frozenset[str]) -> None:
        self.values.setdefault(mailbox, set()).difference_update(removable_sha256)


def issue(p: Pipeline, mailbox: str, slack_user_id: str = "") -> dict[str, Any] | None:
    """Issue a certificate for ``mailbox`` through the worker and return its row."""
    r = create_request(
        p, mailbox=mailbox, requested_by="cli:test", approved=True, approver="cli:test", slack_user_id=slack_user_id
    )
    assert run_until_settled(p, [r["id"]], timeout=60)[r["id"]] == "issued"
    return current_certificate(p, mailbox)
