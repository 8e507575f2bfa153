"""CA backends by name: ``local`` (embedded), ``digicert``, ``sectigo``."""

from __future__ import annotations

from importlib import import_module

from pipeline.ports import CertificateAuthority, Clock
from pipeline.secretbox import SecretBox
from pipeline.settings import Settings


def build_ca(settings: Settings, *, clock: Clock, box: SecretBox) -> CertificateAuthority:
    if settings.ca.backend == "local":
        from integrations.ca.local import from_settings

        return from_settings(settings, clock=clock, box=box)
    module = import_module(f"integrations.ca.{settings.ca.backend}")
    ca: CertificateAuthority = module.from_settings(settings, clock=clock)
    return ca
