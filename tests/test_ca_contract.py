"""One contract for the CA port, run against the embedded CA and both commercial adapters.

Each backend comes with a way to hold orders pending and to let them issue, which is
all that differs between "a CA we run" and "a vendor we poll". The fakes stand in
for DigiCert and Sectigo over real HTTP and issue real certificates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integrations.ca.digicert import DigiCertCA
from integrations.ca.local import from_settings as local_from_settings
from integrations.ca.sectigo import SectigoCA
from pipeline.clock import FakeClock
from pipeline.errors import PermanentFailure, RetryLater
from pipeline.lint import lint_certificate
from pipeline.ports import CertificateAuthority, Order, OrderStatus, RevocationReason, Subscriber
from pipeline.secretbox import SecretBox
from pipeline.settings import DigiCertSettings, SectigoSettings, Settings
from tests.fakes.digicert import FakeDigiCert
from tests.fakes.sectigo import FakeSectigo
from tests.support import make_csr
from tests.support.testca import TestCA

TEST_CA = TestCA.create()
ALICE = Subscriber("alice@example.com", "Alice", "Example")


@dataclass
class Backend:
    ca: CertificateAuthority
    release: Callable[[], None]  # let pending orders issue


@pytest.fixture
def anchor_file(tmp_path: Path) -> str:
    path = tmp_path / "test-root.pem"
    path.write_bytes(TEST_CA.root_pem)
    return str(path)


def _local(make_settings: Callable[..., Settings], master_key: str, clock: FakeClock) -> Iterator[Backend]:
    settings = make_settings(**{"ca.local.issue_delay_seconds": 60})
    ca = local_from_settings(settings, clock=clock, box=SecretBox([master_key]))
    yield Backend(ca, lambda: clock.advance(timedelta(seconds=61)))


def _digicert(anchor: str) -> Iterator[Backend]:
    with FakeDigiCert(TEST_CA) as fake:
        fake.limiter.limits = [(100_000, 5.0)]
        fake.pending_polls = 10_000
        ca = DigiCertCA(
            DigiCertSettings(organization_id=123456, timeout_seconds=2.0),
            api_key=fake.api_key,
            trust_anchor_paths=[anchor],
            base_url=fake.url + "/services/v2",
            sleep=lambda _: None,
        )

        def release() -> None:
            fake.pending_polls = 0

        yield Backend(ca, release)
        ca.close()


def _sectigo(anchor: str) -> Iterator[Backend]:
    with FakeSectigo(TEST_CA) as fake:
        fake.pending_polls = 10_000
        settings = SectigoSettings(
            customer_uri=fake.customer_uri,
            org_id=4321,
            cert_type=5678,
            term=365,
            order_lookup=True,
            timeout_seconds=2.0,
        )
        ca = SectigoCA(
            settings,
            login=fake.login,
            password=fake.password,
            trust_anchor_paths=[anchor],
            base_url=fake.url + "/api",
            sleep=lambda _: None,
        )

        def release() -> None:
            fake.pending_polls = 0

        yield Backend(ca, release)
        ca.close()


@pytest.fixture(params=["local", "digicert", "sectigo"])
def backend(
    request: pytest.FixtureRequest,
    anchor_file: str,
    make_settings: Callable[..., Settings],
    master_key: str,
    clock: FakeClock,
) -> Iterator[Backend]:
    if request.param == "local":
        yield from _local(make_settings, master_key, clock)
    elif request.param == "digicert":
        yield from _digicert(anchor_file)
    else:
        yield from _sectigo(anchor_file)


def settle(backend: Backend, order: Order) -> Order:
    backend.release()
    for _ in range(5):
        order = backend.ca.poll(order_id=order.order_id)
        if order.status is not OrderStatus.PENDING:
            return order
    return order


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_a_working_setup_has_no_doctor_problems(backend: Backend) -> None:
    assert backend.ca.check() == []


def test_an_order_issues_a_lint_clean_certificate_for_our_key_that_chains_to_the_anchors(backend: Backend) -> None:
    csr, key = make_csr(ALICE.mailbox)
    order = backend.ca.submit(csr_pem=csr, subscriber=ALICE, idempotency_key="contract-issue")
    assert order.status in (OrderStatus.PENDING, OrderStatus.ISSUED) and order.order_id
    assert settle(backend, order).status is OrderStatus.ISSUED

    issued = backend.ca.fetch(order_id=order.order_id)
    leaf = load(issued.certificate_pem)
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ALICE.mailbox in san.get_values_for_type(x509.RFC822Name)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert lint_certificate(leaf.public_bytes(serialization.Encoding.DER)).blocking() == []

    # leaf <- chain[0] <- ... <- one of the trust anchors
    anchors = [load(a) for a in backend.ca.trust_anchors()]
    assert anchors
    path = [leaf, *(load(c) for c in issued.chain_pem)]
    assert len(path) >= 2, "the issuing CA comes with the leaf"
    for child, parent in itertools.pairwise(path):
        child.verify_directly_issued_by(parent)
    top = path[-1]
    assert top in anchors or any(top.issuer == a.subject for a in anchors)
    if top not in anchors:
        top.verify_directly_issued_by(next(a for a in anchors if top.issuer == a.subject))


def test_find_order_returns_the_order_placed_with_that_key_only(backend: Backend) -> None:
    assert backend.ca.find_order(idempotency_key="contract-nothing-yet") is None
    placed = backend.ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="contract-find")
    backend.ca.submit(
        csr_pem=make_csr("bob@example.com")[0],
        subscriber=Subscriber("bob@example.com", "Bob", "B"),
        idempotency_key="contract-other",
    )
    found = backend.ca.find_order(idempotency_key="contract-find")
    assert found is not None and found.order_id == placed.order_id
    assert backend.ca.find_order(idempotency_key="contract-missing") is None


def test_a_pending_order_can_be_cancelled_and_cancelling_again_is_not_an_error(backend: Backend) -> None:
    order = backend.ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="contract-cancel")
    assert order.status is OrderStatus.PENDING
    backend.ca.cancel(order_id=order.order_id)
    after = backend.ca.poll(order_id=order.order_id)
    assert after.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
    backend.ca.cancel(order_id=order.order_id)
    backend.release()
    assert backend.ca.poll(order_id=order.order_id).status is after.status  # it never issues later


def test_cancelling_an_issued_order_leaves_the_certificate_alone(backend: Backend) -> None:
    order = backend.ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="contract-c2")
    assert settle(backend, order).status is OrderStatus.ISSUED
    backend.ca.cancel(order_id=order.order_id)
    assert backend.ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED
    assert backend.ca.fetch(order_id=order.order_id).certificate_pem


def test_revoking_an_issued_certificate_and_repeating_it_succeeds(backend: Backend) -> None:
    order = backend.ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="contract-revoke")
    assert settle(backend, order).status is OrderStatus.ISSUED
    serial = format(load(backend.ca.fetch(order_id=order.order_id).certificate_pem).serial_number, "x")
    backend.ca.revoke(order_id=order.order_id, serial=serial, reason=RevocationReason.KEY_COMPROMISE)
    backend.ca.revoke(order_id=order.order_id, serial=serial, reason=RevocationReason.KEY_COMPROMISE)


def test_fetch_of_a_pending_order_is_not_yet_rather_than_a_certificate(backend: Backend) -> None:
    order = backend.ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="contract-early")
    assert order.status is OrderStatus.PENDING
    # The commercial adapters say RetryLater; the embedded CA refuses outright. Either way no certificate.
    with pytest.raises((RetryLater, PermanentFailure)):
        backend.ca.fetch(order_id=order.order_id)


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_the_fakes_test_ca_issues_lint_clean_mailbox_strict_certificates(key_type: str) -> None:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec-p256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever")]))
        .sign(key, hashes.SHA256())
    )
    leaf = TEST_CA.issue(csr.public_bytes(serialization.Encoding.PEM), "dana@example.com")
    result = lint_certificate(leaf.public_bytes(serialization.Encoding.DER))
    assert result.certificate_type == "MAILBOX-STRICT"
    assert result.blocking() == []
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment == (key_type == "rsa-2048")
    assert leaf.subject.rfc4514_string() == "CN=dana@example.com"
