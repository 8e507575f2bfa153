"""Vault backends by name: ``local`` (encrypted store in the data dir), ``cyberark``, ``hashicorp``."""

from __future__ import annotations

from importlib import import_module

from pipeline.ports import Clock, Vault
from pipeline.secretbox import SecretBox
from pipeline.settings import Settings


def build_vault(settings: Settings, *, clock: Clock, box: SecretBox) -> Vault:
    if settings.vault.backend == "local":
        from integrations.vault.local import from_settings

        return from_settings(settings, clock=clock, box=box)
    module = import_module(f"integrations.vault.{settings.vault.backend}")
    vault: Vault = module.from_settings(settings, clock=clock)
    return vault
