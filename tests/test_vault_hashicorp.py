"""The HashiCorp Vault KV v2 backend against a fake Vault over loopback HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import secrets
from collections.abc import Iterator

import pytest

from integrations.http import RetryPolicy
from integrations.vault.hashicorp import HashiCorpVault
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.ports import VaultEntry
from pipeline.settings import HashiCorpSettings
from tests.fakes.hashicorp import FakeHashiCorpVault
from tests.fakes.server import Fault

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def entry(mailbox: str = "alice@example.com", serial: str | None = None, pfx: bytes | None = None) -> VaultEntry:
    return VaultEntry(
        serial=serial or secrets.token_hex(16),
        mailbox=mailbox,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=365),
        pfx=pfx or os.urandom(2500),
        password=secrets.token_urlsafe(18),
    )


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeHashiCorpVault]:
    with FakeHashiCorpVault() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def fake(shared_fake: FakeHashiCorpVault) -> FakeHashiCorpVault:
    shared_fake.reset()
    return shared_fake


def make_vault(fake: FakeHashiCorpVault, **overrides: object) -> HashiCorpVault:
    creds = {k: str(overrides.pop(k, "")) for k in ("token", "role_id", "secret_id")}
    if not any(creds.values()):
        creds["token"] = fake.root_token
    settings = HashiCorpSettings(**{"url": fake.url, "timeout_seconds": 2.0, **overrides})  # type: ignore[arg-type]
    policy = RetryPolicy(sleep=lambda _: None)
    return HashiCorpVault(
        settings, token=creds["token"], role_id=creds["role_id"], secret_id=creds["secret_id"], policy=policy
    )


def test_store_then_retrieve_is_exact_with_fields_and_metadata(fake: FakeHashiCorpVault) -> None:
    vault, e = make_vault(fake), entry()
    ref = vault.store(entry=e)
    assert ref == f"hashicorp:secret:certportal/alice@example.com/{e.serial}"
    secret = vault.retrieve(ref=ref, reason="read-back")
    assert (secret.pfx, secret.password) == (e.pfx, e.password)
    key = fake.kv[f"certportal/alice@example.com/{e.serial}"]
    assert key.versions[1]["data"] == {"pfx": base64.b64encode(e.pfx).decode(), "password": e.password}
    assert key.custom_metadata["serial"] == e.serial
    assert key.custom_metadata["not_after"].startswith("2027-03-01")
    assert all(c.json()["options"]["cas"] == 0 for c in fake.calls_to("POST", r"/v1/secret/data/.*"))


def test_resumed_store_returns_the_same_ref_without_a_new_version(fake: FakeHashiCorpVault) -> None:
    vault, e = make_vault(fake), entry()
    assert vault.store(entry=e) == vault.store(entry=e)
    assert fake.kv[f"certportal/alice@example.com/{e.serial}"].current_version == 1


def test_same_certificate_rebundled_becomes_a_new_version_and_old_ones_are_kept(fake: FakeHashiCorpVault) -> None:
    vault, first = make_vault(fake), entry()
    second = entry(serial=first.serial)
    vault.store(entry=first)
    ref = vault.store(entry=second)
    assert vault.retrieve(ref=ref, reason="r").pfx == second.pfx
    key = fake.kv[f"certportal/alice@example.com/{first.serial}"]
    assert key.current_version == 2 and key.versions[1]["data"]["password"] == first.password


def test_another_certificates_secret_is_never_overwritten(fake: FakeHashiCorpVault) -> None:
    vault = make_vault(fake, path_template="smime/{mailbox}")
    first, other = entry(), entry()
    vault.store(entry=first)
    with pytest.raises(PermanentFailure) as caught:
        vault.store(entry=other)
    assert "another certificate" in caught.value.admin_detail
    fake.put("smime/bob@example.com", {"pfx": "AAAA", "password": "x"})  # no metadata: not ours either
    with pytest.raises(PermanentFailure):
        vault.store(entry=entry("bob@example.com"))
    assert fake.kv["smime/bob@example.com"].current_version == 1
    assert vault.retrieve(ref="hashicorp:secret:smime/alice@example.com", reason="r").pfx == first.pfx


def test_a_concurrent_writer_wins_the_cas_race_and_is_not_overwritten(fake: FakeHashiCorpVault) -> None:
    vault = make_vault(fake, path_template="smime/{mailbox}")
    intruder = {"pfx": "QUJD", "password": "theirs"}
    fake.before_write = lambda path: fake.put(path, intruder, {"serial": "other-serial"})
    with pytest.raises(PermanentFailure):
        vault.store(entry=entry())
    assert fake.kv["smime/alice@example.com"].versions[1]["data"] == intruder


def test_lost_response_after_the_write_resolves_to_the_same_secret(fake: FakeHashiCorpVault) -> None:
    vault, e = make_vault(fake), entry()
    # The first read and the first write each lose their response after taking effect.
    fake.fail_next(Fault(drop=True, after=True), path=r"/v1/secret/data/", times=2)
    ref = vault.store(entry=e)
    assert vault.retrieve(ref=ref, reason="r").password == e.password
    assert fake.kv[f"certportal/alice@example.com/{e.serial}"].current_version == 1


def test_approle_logs_in_and_again_when_the_token_expires(fake: FakeHashiCorpVault) -> None:
    vault = make_vault(fake, auth="approle", role_id="role-1", secret_id="secret-1")
    first = vault.store(entry=entry())
    fake.expire_tokens()
    second = vault.store(entry=entry())
    assert vault.retrieve(ref=first, reason="r") and vault.retrieve(ref=second, reason="r")
    assert len(fake.calls_to("POST", r"/v1/auth/approle/login")) == 2
    assert vault.check() == []


def test_bad_credentials_are_permanent_and_reported_by_check(fake: FakeHashiCorpVault) -> None:
    bad_approle = make_vault(fake, auth="approle", role_id="role-1", secret_id="wrong")
    with pytest.raises(PermanentFailure):
        bad_approle.store(entry=entry())
    assert any("AppRole" in p for p in bad_approle.check())
    expired = make_vault(fake)
    fake.expire_tokens()
    with pytest.raises(PermanentFailure) as caught:
        expired.store(entry=entry())
    assert "denied" in caught.value.admin_detail
    assert any("VAULT_TOKEN" in p for p in expired.check())


def test_check_names_a_missing_mount(fake: FakeHashiCorpVault) -> None:
    assert make_vault(fake).check() == []
    assert any("'kv'" in p for p in make_vault(fake, mount="kv").check())


def test_server_errors_and_rate_limits_retry_then_give_retry_later(fake: FakeHashiCorpVault) -> None:
    vault, e = make_vault(fake), entry()
    fake.fail_next(Fault(status=429, retry_after="0"))
    fake.fail_next(Fault(status=503, body={"errors": ["Vault is sealed"]}))
    assert vault.retrieve(ref=vault.store(entry=e), reason="r").pfx == e.pfx
    fake.fail_next(Fault(status=503, body={"errors": ["Vault is sealed"]}), times=3)
    with pytest.raises(RetryLater, match="sealed"):
        vault.store(entry=entry())
    fake.fail_next(Fault(malformed=True))
    with pytest.raises(RetryLater):
        vault.retrieve(ref="hashicorp:secret:certportal/x/y", reason="r")


def test_missing_or_deleted_secret_is_not_found_and_the_reason_travels(fake: FakeHashiCorpVault) -> None:
    vault, e = make_vault(fake), entry()
    with pytest.raises(NotFound):
        vault.retrieve(ref="hashicorp:secret:certportal/nobody/1", reason="r")
    with pytest.raises(NotFound):
        vault.retrieve(ref="cyberark:Safe:1:2", reason="r")
    ref = vault.store(entry=e)
    vault.retrieve(ref=ref, reason="admin export by U123: key recovery")
    assert fake.calls[-1].headers["x-certportal-reason"] == "admin export by U123: key recovery"
    fake.calls.clear()
    vault._http.request(
        "DELETE", f"secret/data/certportal/alice@example.com/{e.serial}", headers={"X-Vault-Token": fake.root_token}
    )
    with pytest.raises(NotFound):
        vault.retrieve(ref=ref, reason="r")
    # Storing the same certificate again brings it back as a new version.
    assert vault.retrieve(ref=vault.store(entry=e), reason="r").pfx == e.pfx


def test_secrets_never_reach_logs_or_errors(fake: FakeHashiCorpVault, caplog: pytest.LogCaptureFixture) -> None:
    e = entry()
    with caplog.at_level(logging.DEBUG):
        vault = make_vault(fake, path_template="smime/{mailbox}")
        vault.store(entry=e)
        fake.fail_next(Fault(status=503), times=3)
        errors: list[Exception] = []
        for attempt in (lambda: vault.store(entry=e), lambda: vault.store(entry=entry())):
            try:
                attempt()
            except (RetryLater, PermanentFailure) as exc:
                errors.append(exc)
    assert len(errors) == 2
    text = caplog.text + " ".join(f"{x} {getattr(x, 'admin_detail', '')}" for x in errors) + repr(e)
    for secret in (e.password, base64.b64encode(e.pfx).decode()[:40], fake.root_token):
        assert secret not in text


def test_http_is_accepted_with_a_warning_and_settings_are_checked(
    fake: FakeHashiCorpVault, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        make_vault(fake)
    assert "plain http://" in caplog.text
    with pytest.raises(ConfigError):
        make_vault(fake, path_template="certportal/{user}")
    with pytest.raises(ConfigError):
        make_vault(fake, url="vault.example.com")


def test_namespace_header_is_sent(fake: FakeHashiCorpVault) -> None:
    make_vault(fake, namespace="team-pki").store(entry=entry())
    assert {c.headers.get("x-vault-namespace") for c in fake.calls} == {"team-pki"}
