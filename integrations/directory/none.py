"""Directory backend ``none``: publish nowhere (the embedded default). Every call succeeds."""

from __future__ import annotations

from pipeline.ports import Clock
from pipeline.settings import Settings


class NoDirectory:
    name = "none"

    def check(self) -> list[str]:
        return []

    def publish(self, *, mailbox: str, certificate_der: bytes, removable_sha256: frozenset[str]) -> None:
        return None

    def unpublish(self, *, mailbox: str, removable_sha256: frozenset[str]) -> None:
        return None


def from_settings(settings: Settings, *, clock: Clock) -> NoDirectory:
    return NoDirectory()
