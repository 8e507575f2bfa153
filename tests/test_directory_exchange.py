"""The Exchange Online publisher, with real MSAL, against a fake Entra ID and Exchange admin API."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from integrations.directory.entra_token import MsalTokenSource
from integrations.directory.exchange_online import ExchangeOnlineDirectory
from integrations.http import RetryPolicy
from pipeline.errors import NotFound, PermanentFailure, RetryLater
from pipeline.settings import ExchangeOnlineSettings
from tests.fakes.exchange_online import AUTHORITY_HOST, HASHTABLE, FakeExchangeOnline, FakeMailbox, app_credential
from tests.fakes.server import Fault
from tests.support.dircerts import FOREIGN_CA, OUR_CA, fp, smime_blob

TENANT, CLIENT = "11111111-2222-3333-4444-555555555555", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MAILBOX = "alice@example.com"


@pytest.fixture(scope="module")
def credential(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, x509.Certificate]:
    return app_credential(tmp_path_factory.mktemp("exo"), "certportal-app")


@pytest.fixture(scope="module")
def shared_fake(credential: tuple[Path, x509.Certificate]) -> Iterator[FakeExchangeOnline]:
    with FakeExchangeOnline(tenant_id=TENANT, client_id=CLIENT, certificate=credential[1]) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def fake(shared_fake: FakeExchangeOnline) -> FakeExchangeOnline:
    shared_fake.reset()
    shared_fake.mailboxes[MAILBOX] = FakeMailbox()
    return shared_fake


def make_directory(fake: FakeExchangeOnline, certificate_path: Path) -> ExchangeOnlineDirectory:
    settings = ExchangeOnlineSettings(
        tenant_id=TENANT,
        client_id=CLIENT,
        certificate_path=str(certificate_path),
        base_url=fake.url,
        authority_url=f"https://{AUTHORITY_HOST}",
        timeout_seconds=3.0,
    )
    tokens = MsalTokenSource(
        tenant_id=TENANT,
        client_id=CLIENT,
        certificate_path=str(certificate_path),
        authority_url=settings.authority_url,
        scope="https://outlook.office365.com/.default",
        timeout=3.0,
        http_client=httpx.Client(transport=fake.msal_transport(), timeout=3.0),
    )
    return ExchangeOnlineDirectory(settings, tokens=tokens, policy=RetryPolicy(sleep=lambda _: None))


@pytest.fixture
def exo(fake: FakeExchangeOnline, credential: tuple[Path, x509.Certificate]) -> ExchangeOnlineDirectory:
    return make_directory(fake, credential[0])


def set_mailbox_calls(fake: FakeExchangeOnline) -> list[dict[str, Any]]:
    calls = fake.calls_to("POST", rf"/adminapi/beta/{TENANT}/InvokeCommand")
    return [
        c.json()["CmdletInput"]["Parameters"] for c in calls if c.json()["CmdletInput"]["CmdletName"] == "Set-Mailbox"
    ]


def test_add_is_idempotent_and_uses_add_semantics(fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory) -> None:
    der = OUR_CA.issue(MAILBOX)
    exo.publish(mailbox=MAILBOX, certificate_der=der, removable_sha256=frozenset())
    exo.publish(mailbox=MAILBOX, certificate_der=der, removable_sha256=frozenset())
    assert fake.mailboxes[MAILBOX].certificates == [der]
    (only,) = set_mailbox_calls(fake)
    assert only["UserCertificate"] == {"@odata.type": HASHTABLE, "Add": [base64.b64encode(der).decode()]}
    invoke = fake.calls_to("POST", rf"/adminapi/beta/{TENANT}/InvokeCommand")[0]
    assert invoke.headers["x-anchormailbox"] == f"UPN:{MAILBOX}" and invoke.headers["authorization"].startswith(
        "Bearer "
    )
    assert fake.token_requests == 1  # MSAL's cache serves the later calls


def test_renewal_swaps_in_one_call_and_revocation_removes(
    fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory
) -> None:
    old, new, foreign = OUR_CA.issue(MAILBOX), OUR_CA.issue(MAILBOX), FOREIGN_CA.issue(MAILBOX)
    fake.mailboxes[MAILBOX].certificates = [foreign, old]
    exo.publish(mailbox=MAILBOX, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert fake.mailboxes[MAILBOX].certificates == [foreign, new]
    (swap,) = set_mailbox_calls(fake)
    assert set(swap["UserCertificate"]) == {"@odata.type", "Add", "Remove"}
    exo.unpublish(mailbox=MAILBOX, removable_sha256=frozenset({fp(new)}))
    assert exo.certificates(mailbox=MAILBOX) == ([foreign], [])


def test_stale_smime_values_of_ours_go_and_foreign_stay(
    fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    old, new, foreign = OUR_CA.issue(MAILBOX), OUR_CA.issue(MAILBOX), FOREIGN_CA.issue(MAILBOX)
    foreign_blob = smime_blob(foreign, FOREIGN_CA.der)
    fake.mailboxes[MAILBOX].smime = [smime_blob(old, OUR_CA.der), foreign_blob]
    with caplog.at_level(logging.WARNING):
        exo.publish(mailbox=MAILBOX, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert fake.mailboxes[MAILBOX].smime == [foreign_blob]
    assert fp(foreign) in caplog.text


def test_full_mailbox_fails_without_changing_anything(fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory) -> None:
    fake.mailboxes[MAILBOX].certificates = [FOREIGN_CA.issue(MAILBOX) for _ in range(15)]
    with pytest.raises(PermanentFailure) as caught:
        exo.publish(mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset())
    assert MAILBOX in caught.value.user_reason
    assert set_mailbox_calls(fake) == []


def test_unknown_and_synced_mailboxes(fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory) -> None:
    with pytest.raises(NotFound, match=r"bob@example\.com"):
        exo.publish(
            mailbox="bob@example.com", certificate_der=OUR_CA.issue("bob@example.com"), removable_sha256=frozenset()
        )
    fake.mailboxes["carol@example.com"] = FakeMailbox(synced_from_ad=True)
    with pytest.raises(PermanentFailure) as caught:
        exo.publish(
            mailbox="carol@example.com", certificate_der=OUR_CA.issue("carol@example.com"), removable_sha256=frozenset()
        )
    assert "on-premises" in caught.value.user_reason


def test_expired_token_is_replaced_once(fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory) -> None:
    exo.publish(mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset())
    fake.expire_tokens()
    exo.publish(mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset())
    assert fake.token_requests == 2 and len(fake.mailboxes[MAILBOX].certificates) == 2


def test_unregistered_certificate_is_refused_by_entra(fake: FakeExchangeOnline, tmp_path: Path) -> None:
    other, _ = app_credential(tmp_path, "not-registered")
    exo = make_directory(fake, other)
    with pytest.raises(PermanentFailure) as caught:
        exo.publish(mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset())
    assert "AADSTS700027" in caught.value.admin_detail
    assert any("AADSTS700027" in p for p in exo.check())
    assert any("certificate_path" in p for p in make_directory(fake, tmp_path / "missing.pem").check())
    assert not any("PRIVATE KEY" in p for p in make_directory(fake, other).check())


def test_outages_retry(fake: FakeExchangeOnline, exo: ExchangeOnlineDirectory) -> None:
    der = OUR_CA.issue(MAILBOX)
    fake.fail_next(Fault(status=429, retry_after="0"), path="InvokeCommand")
    exo.publish(mailbox=MAILBOX, certificate_der=der, removable_sha256=frozenset())
    fake.fail_next(Fault(status=503), path="InvokeCommand", times=3)
    with pytest.raises(RetryLater):
        exo.unpublish(mailbox=MAILBOX, removable_sha256=frozenset({fp(der)}))
    exo.unpublish(mailbox=MAILBOX, removable_sha256=frozenset({fp(der)}))
    assert fake.mailboxes[MAILBOX].certificates == []


def test_token_endpoint_outage_is_retry_later(
    fake: FakeExchangeOnline, credential: tuple[Path, x509.Certificate]
) -> None:
    fake.fail_next(Fault(status=503), path="oauth2")
    with pytest.raises(RetryLater):
        make_directory(fake, credential[0]).publish(
            mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset()
        )
    # MSAL replays a 5xx for a few seconds per client; a later attempt gets through.
    make_directory(fake, credential[0]).publish(
        mailbox=MAILBOX, certificate_der=OUR_CA.issue(MAILBOX), removable_sha256=frozenset()
    )
    assert len(fake.mailboxes[MAILBOX].certificates) == 1


def test_check_passes_with_a_working_app(exo: ExchangeOnlineDirectory) -> None:
    assert exo.check() == []
