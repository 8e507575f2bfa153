"""Everything the domain needs, built once by the composition root (``bot/wiring.py``) and passed in."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.audit import AuditLog
from pipeline.ports import CertificateAuthority, Clock, DirectoryPublisher, Notifier, Vault
from pipeline.secretbox import SecretBox
from pipeline.settings import Settings
from pipeline.store.db import Store


def _no_hook(point: str) -> None:
    return None


@dataclass
class Pipeline:
    settings: Settings
    store: Store
    box: SecretBox
    clock: Clock
    audit: AuditLog
    ca: CertificateAuthority
    vault: Vault
    directory: DirectoryPublisher
    notifier: Notifier
    # Called at named points of the state machine ("before:<step>", "after:<step>",
    # "order:submitted"); the crash tests use it to die at exact boundaries.
    hook: Callable[[str], None] = field(default=_no_hook)

    def close(self) -> None:
        """End backend sessions (e.g. CyberArk logs off) and this thread's database connection."""
        for backend in (self.vault, self.directory, self.ca):
            close = getattr(backend, "close", None)
            if close is not None:
                # Shutting down: one backend failing to close must not stop the others.
                with contextlib.suppress(Exception):
                    close()
        self.store.close()
