"""One contract for the directory port, run against every backend, plus the shared value rules.

``none`` publishes nowhere and accepts everything; the others (a real slapd, the
Exchange Online fake) can be read back, so the rules that matter to senders are
checked on them: the new certificate is there, listed certificates of ours go at
once, nothing else is touched, a full entry fails without changes, and an unknown
mailbox is named in a NotFound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from integrations.directory import build_directory
from integrations.directory.certvalues import blob_subject_fingerprints, plan_publish
from integrations.directory.entra_token import MsalTokenSource
from integrations.directory.exchange_online import ExchangeOnlineDirectory
from integrations.http import RetryPolicy
from pipeline.clock import FakeClock
from pipeline.errors import NotFound, PermanentFailure
from pipeline.ports import DirectoryPublisher
from pipeline.settings import ExchangeOnlineSettings, Settings
from tests.fakes.exchange_online import AUTHORITY_HOST, FakeExchangeOnline, FakeMailbox, app_credential
from tests.support.dircerts import FOREIGN_CA, OUR_CA, fp, smime_blob
from tests.support.slapd import ADMIN_DN, BASE_DN, Slapd


@dataclass
class Backend:
    directory: DirectoryPublisher
    mailbox: str  # a user that exists
    # Read back / put values (userCertificate, userSMIMECertificate); None where nothing is stored.
    read: Callable[[], tuple[list[bytes], list[bytes]]] | None = None
    put: Callable[[list[bytes], list[bytes]], None] | None = None

    def readable(self) -> Backend:
        if self.read is None or self.put is None:
            pytest.skip(f"{self.directory.name} publishes nowhere")
        return self


def _none(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    yield Backend(build_directory(settings, clock=FakeClock()), "alice@example.com")


def _ldap(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    server: Slapd = request.getfixturevalue("slapd_server")
    mailbox, dn = server.add_user()
    settings.directory.backend = "ldap"
    ldap = settings.directory.ldap
    ldap.url, ldap.bind_dn, ldap.base_dn, ldap.ca_file = server.url, ADMIN_DN, BASE_DN, str(server.ca_file)
    settings.secrets.ldap_bind_password = server.admin_password
    directory = build_directory(settings, clock=FakeClock())
    yield Backend(
        directory,
        mailbox,
        read=lambda: server.values(dn),
        put=lambda certificates, smime: server.set_values(dn, certificates, tuple(smime)),
    )


def _exchange(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    fake: FakeExchangeOnline = request.getfixturevalue("exchange_fake")
    credential: Path = request.getfixturevalue("exchange_credential")
    fake.reset()
    mailbox = "alice@example.com"
    fake.mailboxes[mailbox] = box = FakeMailbox()
    tokens = MsalTokenSource(
        tenant_id=fake.tenant_id,
        client_id=fake.client_id,
        certificate_path=str(credential),
        authority_url=f"https://{AUTHORITY_HOST}",
        scope="https://outlook.office365.com/.default",
        timeout=3.0,
        http_client=httpx.Client(transport=fake.msal_transport(), timeout=3.0),
    )
    exo_settings = ExchangeOnlineSettings(tenant_id=fake.tenant_id, client_id=fake.client_id, base_url=fake.url)
    directory = ExchangeOnlineDirectory(exo_settings, tokens=tokens, policy=RetryPolicy(sleep=lambda _: None))

    def put(certificates: list[bytes], smime: list[bytes]) -> None:
        box.certificates, box.smime = list(certificates), list(smime)

    yield Backend(directory, mailbox, read=lambda: (list(box.certificates), list(box.smime)), put=put)
    directory.close()


BACKENDS = {"none": _none, "ldap": _ldap, "exchange_online": _exchange}


@pytest.fixture(scope="module")
def exchange_credential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return app_credential(tmp_path_factory.mktemp("exo-app"), "contract-app")[0]


@pytest.fixture(scope="module")
def exchange_fake(exchange_credential: Path) -> Iterator[FakeExchangeOnline]:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(exchange_credential.read_bytes())
    with FakeExchangeOnline(tenant_id="contoso-tenant", client_id="app-1", certificate=certificate) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(
    params=[
        "none",
        pytest.param("ldap", marks=pytest.mark.slapd),
        "exchange_online",
    ]
)
def backend(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[Backend]:
    yield from BACKENDS[request.param](request, make_settings())


def test_is_a_publisher_that_checks_clean(backend: Backend) -> None:
    assert isinstance(backend.directory, DirectoryPublisher)
    assert backend.directory.check() == []


def test_publish_and_unpublish_accept_the_port_arguments(backend: Backend) -> None:
    der = OUR_CA.issue(backend.mailbox)
    backend.directory.publish(mailbox=backend.mailbox, certificate_der=der, removable_sha256=frozenset())
    backend.directory.publish(mailbox=backend.mailbox, certificate_der=der, removable_sha256=frozenset())
    backend.directory.unpublish(mailbox=backend.mailbox, removable_sha256=frozenset({fp(der)}))


def test_new_certificate_is_published_once(backend: Backend) -> None:
    b = backend.readable()
    der = OUR_CA.issue(b.mailbox)
    for _ in range(2):
        b.directory.publish(mailbox=b.mailbox, certificate_der=der, removable_sha256=frozenset())
    assert b.read() == ([der], [])  # type: ignore[misc]


def test_renewal_drops_ours_at_once_and_keeps_everything_else(backend: Backend) -> None:
    b = backend.readable()
    old, new, foreign, ours_in_use = (ca.issue(b.mailbox) for ca in (OUR_CA, OUR_CA, FOREIGN_CA, OUR_CA))
    stale, foreign_blob = smime_blob(old, OUR_CA.der), smime_blob(foreign, FOREIGN_CA.der)
    b.put([foreign, ours_in_use, old], [stale, foreign_blob])  # type: ignore[misc]
    b.directory.publish(mailbox=b.mailbox, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    certificates, smime = b.read()  # type: ignore[misc]
    assert sorted(certificates) == sorted([foreign, ours_in_use, new]) and smime == [foreign_blob]


def test_unpublish_removes_only_what_is_listed(backend: Backend) -> None:
    b = backend.readable()
    revoked, foreign = OUR_CA.issue(b.mailbox), FOREIGN_CA.issue(b.mailbox)
    b.put([revoked, foreign], [])  # type: ignore[misc]
    b.directory.unpublish(mailbox=b.mailbox, removable_sha256=frozenset({fp(revoked), fp(OUR_CA.der)}))
    assert b.read() == ([foreign], [])  # type: ignore[misc]


def test_full_entry_fails_naming_the_mailbox_and_changes_nothing(backend: Backend) -> None:
    b = backend.readable()
    others = [FOREIGN_CA.issue(b.mailbox) for _ in range(15)]
    b.put(others, [])  # type: ignore[misc]
    with pytest.raises(PermanentFailure) as caught:
        b.directory.publish(mailbox=b.mailbox, certificate_der=OUR_CA.issue(b.mailbox), removable_sha256=frozenset())
    assert b.mailbox in caught.value.user_reason
    assert sorted(b.read()[0]) == sorted(others)  # type: ignore[misc]


def test_unknown_mailbox_is_not_found(backend: Backend) -> None:
    b = backend.readable()
    with pytest.raises(NotFound, match="nobody-here"):
        b.directory.publish(
            mailbox="nobody-here@example.com", certificate_der=OUR_CA.issue(b.mailbox), removable_sha256=frozenset()
        )


# -- the shared value rules (certvalues), without a server -------------------------------------


def test_plan_never_removes_the_certificate_being_published() -> None:
    der = OUR_CA.issue("a@example.com")
    plan = plan_publish(
        mailbox="a@example.com", certificate_values=[der], smime_values=[], new_der=der, removable_sha256={fp(der)}
    )
    assert not plan.changes_anything


def test_plan_accepts_fingerprints_in_any_case_and_with_colons() -> None:
    old = OUR_CA.issue("a@example.com")
    colons = ":".join(fp(old)[i : i + 2] for i in range(0, 64, 2)).upper()
    plan = plan_publish(
        mailbox="a@example.com", certificate_values=[old], smime_values=[], new_der=None, removable_sha256={colons}
    )
    assert plan.remove_certificates == (old,)


def test_plan_counts_the_limit_after_removals() -> None:
    mailbox = "a@example.com"
    others = [FOREIGN_CA.issue(mailbox) for _ in range(13)]
    old = [OUR_CA.issue(mailbox) for _ in range(2)]
    new = OUR_CA.issue(mailbox)
    plan = plan_publish(
        mailbox=mailbox,
        certificate_values=[*others, *old],
        smime_values=[],
        new_der=new,
        removable_sha256={fp(old[0])},
    )
    assert plan.add == new and plan.remove_certificates == (old[0],)
    with pytest.raises(PermanentFailure):
        plan_publish(
            mailbox=mailbox, certificate_values=[*others, *old], smime_values=[], new_der=new, removable_sha256=set()
        )
    # Unpublishing never fails on the limit, and an already present certificate needs no room.
    plan_publish(
        mailbox=mailbox, certificate_values=[*others, *old, new], smime_values=[], new_der=new, removable_sha256=set()
    )


def test_smime_blobs_belong_to_their_end_entity_certificates() -> None:
    mailbox = "a@example.com"
    old, other_of_ours = OUR_CA.issue(mailbox), OUR_CA.issue(mailbox)
    both = smime_blob(old, other_of_ours, OUR_CA.der)
    assert blob_subject_fingerprints(both) == {fp(old), fp(other_of_ours)}
    assert blob_subject_fingerprints(b"not pkcs7") is None
    assert blob_subject_fingerprints(smime_blob(OUR_CA.der)) is None  # only a CA certificate: nobody's
    plan = plan_publish(
        mailbox=mailbox, certificate_values=[], smime_values=[both, b"junk"], new_der=None, removable_sha256={fp(old)}
    )
    # Half of the blob is still in use, and junk is not ours to judge: both stay.
    assert plan.remove_smime == () and plan.kept_smime == (both, b"junk")
