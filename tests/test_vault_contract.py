"""One contract for the vault port, run against every backend built from settings as the wiring builds it.

The local vault is the real thing; CyberArk and HashiCorp Vault are fakes over
loopback HTTP. What the pipeline relies on: ``store`` is idempotent and returns a
reference, ``retrieve`` gives back exactly what was stored (the pipeline compares
before wiping its working copy), unknown references are NotFound, and neither the
reference nor the entry's repr carries a secret.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from integrations.vault import build_vault
from pipeline.clock import FakeClock
from pipeline.errors import NotFound
from pipeline.ports import Vault, VaultEntry
from pipeline.secretbox import SecretBox
from pipeline.settings import Settings
from tests.fakes.cyberark import FakeCyberArk
from tests.fakes.hashicorp import FakeHashiCorpVault

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@dataclass
class Backend:
    vault: Vault
    missing_ref: str


def _local(request: pytest.FixtureRequest, settings: Settings, box: SecretBox) -> Iterator[Backend]:
    yield Backend(build_vault(settings, clock=FakeClock(NOW), box=box), missing_ref="00ff00ff")


def _hashicorp(request: pytest.FixtureRequest, settings: Settings, box: SecretBox) -> Iterator[Backend]:
    fake: FakeHashiCorpVault = request.getfixturevalue("hashicorp_fake")
    fake.reset()
    settings.vault.backend = "hashicorp"
    settings.vault.hashicorp.url = fake.url
    settings.secrets.vault_token = fake.root_token
    vault = build_vault(settings, clock=FakeClock(NOW), box=box)
    yield Backend(vault, missing_ref="hashicorp:secret:certportal/nobody@example.com/00")
    vault.close()  # type: ignore[attr-defined]


def _cyberark(request: pytest.FixtureRequest, settings: Settings, box: SecretBox) -> Iterator[Backend]:
    fake: FakeCyberArk = request.getfixturevalue("cyberark_fake")
    fake.reset()
    settings.vault.backend = "cyberark"
    settings.vault.cyberark.base_url = fake.url
    settings.vault.cyberark.safe = "SMIME-Keys"
    settings.vault.cyberark.platform_id = "CertPortal-SMIME"
    settings.secrets.cyberark_username, settings.secrets.cyberark_password = fake.credentials
    vault = build_vault(settings, clock=FakeClock(NOW), box=box)
    yield Backend(vault, missing_ref="cyberark:SMIME-Keys:25_999999:25_999998")
    vault.close()  # type: ignore[attr-defined]
    assert fake.logoffs == 1


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Settings, SecretBox], Iterator[Backend]]] = {
    "local": _local,
    "hashicorp": _hashicorp,
    "cyberark": _cyberark,
}


@pytest.fixture(scope="module")
def hashicorp_fake() -> Iterator[FakeHashiCorpVault]:
    with FakeHashiCorpVault() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="module")
def cyberark_fake() -> Iterator[FakeCyberArk]:
    with FakeCyberArk() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], master_key: str
) -> Iterator[Backend]:
    yield from BACKENDS[request.param](request, make_settings(), SecretBox([master_key]))


def entry(mailbox: str = "alice@example.com") -> VaultEntry:
    return VaultEntry(
        serial=secrets.token_hex(16),
        mailbox=mailbox,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=365),
        pfx=bytes(range(256)) + os.urandom(2000),  # every byte value survives
        password=secrets.token_urlsafe(18),
    )


def test_is_a_vault_and_checks_clean(backend: Backend) -> None:
    assert isinstance(backend.vault, Vault)
    assert backend.vault.check() == []


def test_retrieve_gives_back_exactly_what_was_stored(backend: Backend) -> None:
    e = entry()
    secret = backend.vault.retrieve(ref=backend.vault.store(entry=e), reason="read-back before wiping")
    assert secret.pfx == e.pfx and secret.password == e.password


def test_store_is_idempotent_for_a_resumed_job(backend: Backend) -> None:
    e = entry()
    first = backend.vault.store(entry=e)
    assert backend.vault.store(entry=e) == first
    assert backend.vault.retrieve(ref=first, reason="r").pfx == e.pfx


def test_certificates_are_kept_apart(backend: Backend) -> None:
    a, b, c = entry(), entry(), entry("bob@example.com")
    refs = [backend.vault.store(entry=x) for x in (a, b, c)]
    assert len(set(refs)) == 3
    for ref, x in zip(refs, (a, b, c), strict=True):
        assert backend.vault.retrieve(ref=ref, reason="r").password == x.password


def test_unknown_reference_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.vault.retrieve(ref=backend.missing_ref, reason="r")


def test_no_secret_in_the_reference_or_reprs(backend: Backend) -> None:
    e = entry()
    ref = backend.vault.store(entry=e)
    secret = backend.vault.retrieve(ref=ref, reason="r")
    for text in (ref, repr(e), repr(secret)):
        assert e.password not in text and e.pfx.hex()[:32] not in text
