"""The CyberArk PVWA backend against a fake PVWA over loopback HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import secrets
from collections.abc import Iterator

import pytest

from integrations.http import RetryPolicy
from integrations.vault.cyberark import CyberArkVault
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.ports import VaultEntry
from pipeline.settings import CyberArkSettings
from tests.fakes.cyberark import API, FakeCyberArk
from tests.fakes.server import Fault

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def entry(mailbox: str = "alice@example.com", serial: str | None = None) -> VaultEntry:
    return VaultEntry(
        serial=serial or secrets.token_hex(16),
        mailbox=mailbox,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=365),
        pfx=os.urandom(2500),
        password=secrets.token_urlsafe(18),
    )


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeCyberArk]:
    with FakeCyberArk() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def fake(shared_fake: FakeCyberArk) -> FakeCyberArk:
    shared_fake.reset()
    return shared_fake


def make_vault(fake: FakeCyberArk, *, password: str = "pw-1", **overrides: object) -> CyberArkVault:
    values: dict[str, object] = {
        "base_url": fake.url,
        "safe": "SMIME-Keys",
        "platform_id": "CertPortal-SMIME",
        "timeout_seconds": 2.0,
    }
    values.update(overrides)
    return CyberArkVault(
        CyberArkSettings(**values),  # type: ignore[arg-type]
        username="svc-certportal",
        password=password,
        policy=RetryPolicy(sleep=lambda _: None),
    )


def test_store_creates_two_accounts_with_properties_and_retrieve_is_exact(fake: FakeCyberArk) -> None:
    vault, e = make_vault(fake), entry()
    ref = vault.store(entry=e)
    accounts = {a["name"]: a for a in fake.accounts.values()}
    pfx_account = accounts[f"certportal-{e.serial}-pfx"]
    assert pfx_account["secret"] == base64.b64encode(e.pfx).decode()
    assert accounts[f"certportal-{e.serial}-pwd"]["secret"] == e.password
    props = pfx_account["platformAccountProperties"]
    assert props["CertSerial"] == e.serial and props["Mailbox"] == e.mailbox
    assert props["CertExpires"].startswith("2027-03-01") and props["CertCreated"].startswith("2026-03-01")
    assert pfx_account["secretManagement"]["automaticManagementEnabled"] is False
    assert ref.startswith("cyberark:SMIME-Keys:")
    secret = vault.retrieve(ref=ref, reason="read-back after store")
    assert (secret.pfx, secret.password) == (e.pfx, e.password)
    assert [reason for _, reason in fake.retrievals] == ["read-back after store"] * 2
    call = fake.calls_to("POST", rf"{API}/Accounts")[0]
    assert not call.headers["authorization"].lower().startswith("bearer")


def test_resumed_store_finds_the_accounts_instead_of_duplicating(fake: FakeCyberArk) -> None:
    vault, e = make_vault(fake), entry()
    assert vault.store(entry=e) == vault.store(entry=e)
    assert len(fake.accounts) == 2
    assert len(fake.calls_to("POST", rf"{API}/Accounts")) == 2


def test_half_finished_store_completes_and_refreshes_the_existing_value(fake: FakeCyberArk) -> None:
    vault, e = make_vault(fake), entry()
    # An earlier attempt created the PFX account with an older bundle, then crashed.
    vault.store(entry=entry(serial=e.serial))
    pwd_id = next(i for i, a in fake.accounts.items() if a["name"].endswith("-pwd"))
    del fake.accounts[pwd_id]
    ref = vault.store(entry=e)
    assert len(fake.accounts) == 2
    assert vault.retrieve(ref=ref, reason="r").pfx == e.pfx


def test_lost_answer_to_an_add_is_resolved_by_searching(fake: FakeCyberArk) -> None:
    vault, e = make_vault(fake), entry()
    fake.fail_next(Fault(drop=True, after=True), path=rf"{API}/Accounts\Z")
    ref = vault.store(entry=e)
    assert len(fake.accounts) == 2
    assert vault.retrieve(ref=ref, reason="r").password == e.password


def test_an_account_of_another_mailbox_is_not_taken_over(fake: FakeCyberArk) -> None:
    vault, e = make_vault(fake), entry()
    vault.store(entry=e)
    with pytest.raises(PermanentFailure) as caught:
        vault.store(entry=entry("mallory@example.com", serial=e.serial))
    assert "another certificate" in caught.value.admin_detail
    assert vault.retrieve(ref=vault.store(entry=e), reason="r").pfx == e.pfx


def test_session_is_reused_renewed_on_expiry_and_logged_off(fake: FakeCyberArk) -> None:
    vault = make_vault(fake)
    vault.store(entry=entry())
    vault.store(entry=entry())
    assert len(fake.calls_to("POST", rf"{API}/Auth/CyberArk/Logon")) == 1
    fake.expire_sessions()
    ref = vault.store(entry=entry())
    assert len(fake.calls_to("POST", rf"{API}/Auth/CyberArk/Logon")) == 2
    vault.retrieve(ref=ref, reason="r")
    vault.close()
    assert fake.logoffs == 1 and not fake.tokens


def test_ldap_logon_method_is_used_when_configured(fake: FakeCyberArk) -> None:
    make_vault(fake, auth_method="LDAP").store(entry=entry())
    assert fake.calls_to("POST", rf"{API}/Auth/LDAP/Logon")


def test_bad_credentials_and_missing_safe_are_permanent_and_reported(fake: FakeCyberArk) -> None:
    bad = make_vault(fake, password="wrong")
    with pytest.raises(PermanentFailure) as caught:
        bad.store(entry=entry())
    assert "Authentication failure" in caught.value.admin_detail
    assert any("Authentication failure" in p for p in bad.check())
    no_safe = make_vault(fake, safe="Nope")
    assert any("'Nope'" in p for p in no_safe.check())
    with pytest.raises(PermanentFailure):
        no_safe.store(entry=entry())
    with pytest.raises(PermanentFailure, match="Platform"):
        make_vault(fake, platform_id="Missing").store(entry=entry())
    assert make_vault(fake).check() == []


def test_outage_and_rate_limit_map_to_retry(fake: FakeCyberArk) -> None:
    vault = make_vault(fake)
    fake.fail_next(Fault(status=503), times=3)
    with pytest.raises(RetryLater):
        vault.store(entry=entry())
    fake.fail_next(Fault(status=429, retry_after="0"))
    assert vault.store(entry=entry())
    fake.fail_next(Fault(malformed=True), path=rf"{API}/Accounts\Z")
    with pytest.raises(RetryLater):
        vault.store(entry=entry())


def test_retrieve_unknown_account_is_not_found_and_reason_is_always_sent(fake: FakeCyberArk) -> None:
    vault = make_vault(fake)
    with pytest.raises(NotFound):
        vault.retrieve(ref="cyberark:SMIME-Keys:25_999:25_998", reason="r")
    with pytest.raises(NotFound):
        vault.retrieve(ref="hashicorp:secret:x", reason="r")
    ref = vault.store(entry=entry())
    vault.retrieve(ref=ref, reason="  ")  # a platform that requires a reason still gets one
    assert all(reason for _, reason in fake.retrievals)


def test_password_with_surrounding_whitespace_is_refused_rather_than_trimmed(fake: FakeCyberArk) -> None:
    e = entry()
    padded = VaultEntry(e.serial, e.mailbox, e.not_before, e.not_after, pfx=e.pfx, password=" x ")
    with pytest.raises(PermanentFailure):
        make_vault(fake).store(entry=padded)
    assert not fake.accounts


def test_secrets_never_reach_logs_or_errors(fake: FakeCyberArk, caplog: pytest.LogCaptureFixture) -> None:
    e = entry()
    problems: list[str] = []
    with caplog.at_level(logging.DEBUG):
        vault = make_vault(fake)
        vault.retrieve(ref=vault.store(entry=e), reason="r")
        for bad, outage in ((make_vault(fake, password="wrong-pw-xyz"), 0), (vault, 3)):
            fake.fail_next(Fault(status=503), times=outage)
            try:
                bad.store(entry=e)
            except (PermanentFailure, RetryLater) as exc:
                problems.append(f"{exc} {exc.admin_detail}")
    assert len(problems) == 2
    text = caplog.text + " ".join(problems) + repr(e)
    for secret in (e.password, base64.b64encode(e.pfx).decode()[:40], "wrong-pw-xyz", "pw-1", *fake.tokens):
        assert secret not in text


def test_settings_are_checked(fake: FakeCyberArk) -> None:
    with pytest.raises(ConfigError):
        make_vault(fake, auth_method="SAML")
    with pytest.raises(ConfigError):
        make_vault(fake, base_url="pvwa.example.com")
    assert make_vault(fake, base_url=fake.url + "/PasswordVault/").check() == []
