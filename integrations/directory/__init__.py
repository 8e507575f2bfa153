"""Directory backends by name: ``none``, ``ldap`` (LDAP / Active Directory), ``exchange_online``."""

from __future__ import annotations

from importlib import import_module

from pipeline.ports import Clock, DirectoryPublisher
from pipeline.settings import Settings


def build_directory(settings: Settings, *, clock: Clock) -> DirectoryPublisher:
    module = import_module(f"integrations.directory.{settings.directory.backend}")
    directory: DirectoryPublisher = module.from_settings(settings, clock=clock)
    return directory
