"""The composition root: settings in, a ready ``Pipeline`` out. The only place backends are chosen."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from integrations.ca import build_ca
from integrations.directory import build_directory
from integrations.vault import build_vault
from pipeline.audit import AuditLog
from pipeline.clock import SystemClock
from pipeline.context import Pipeline
from pipeline.ports import Clock, Notifier
from pipeline.secretbox import SecretBox, resolve_master_keys
from pipeline.settings import Settings, load_settings
from pipeline.store.db import Store

log = logging.getLogger("certportal")


def settings_from_environment(config: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(config, os.environ if environ is None else environ)


def master_box(settings: Settings) -> tuple[SecretBox, bool]:
    """The secret box and whether its keys come from the generated key file."""
    keys, from_file = resolve_master_keys(settings.secrets.master_keys, settings.data_dir)
    return SecretBox(keys), from_file


def build_pipeline(
    settings: Settings,
    *,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
    hook: Callable[[str], None] | None = None,
) -> Pipeline:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    clock = clock or SystemClock()
    box, _ = master_box(settings)
    store = Store(settings.db_path).open()
    audit = AuditLog(store, box=box, clock=clock, anchor_path=settings.data_dir / "audit.anchor")
    if notifier is None:
        notifier = default_notifier(settings)
    p = Pipeline(
        settings=settings,
        store=store,
        box=box,
        clock=clock,
        audit=audit,
        ca=build_ca(settings, clock=clock, box=box),
        vault=build_vault(settings, clock=clock, box=box),
        directory=build_directory(settings, clock=clock),
        notifier=notifier,
    )
    if hook is not None:
        p.hook = hook
    # The Slack notifier records approvals messages in the store, which exists only now.
    attach = getattr(notifier, "attach", None)
    if callable(attach):
        attach(p)
    return p


def default_notifier(settings: Settings) -> Notifier:
    """Slack when a bot token is configured (so `certportal worker`, `issue` and `revoke` tell people
    in Slack too), else the log."""
    if settings.secrets.slack_bot_token:
        from bot.slack.app import build_notifier

        return build_notifier(settings)
    from bot.console import ConsoleNotifier

    return ConsoleNotifier()


def crash_hook_from_environment(environ: Mapping[str, str]) -> Callable[[str], None] | None:
    """``CERTPORTAL_CRASH_AT=<point>`` kills the process with SIGKILL at that state-machine point.

    It exists for the crash tests, which prove a restart resumes without a second
    CA order; it does nothing unless set.
    """
    point = environ.get("CERTPORTAL_CRASH_AT", "")
    if not point:
        return None
    marker = Path(environ.get("CERTPORTAL_CRASH_MARKER", "")) if environ.get("CERTPORTAL_CRASH_MARKER") else None

    def hook(at: str) -> None:
        if at == point and (marker is None or not marker.exists()):
            if marker is not None:
                marker.touch()
            os.kill(os.getpid(), 9)

    return hook
