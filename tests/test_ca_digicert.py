"""The DigiCert adapter against the loopback CertCentral fake, over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from integrations.ca.common import split_bundle
from integrations.ca.digicert import DigiCertCA, from_settings
from integrations.ca.digicert_orders import marker_for
from pipeline.clock import SystemClock
from pipeline.errors import LookupUnsupported, OutcomeUnknown, PermanentFailure, RetryLater
from pipeline.ports import OrderStatus, RevocationReason, Subscriber
from pipeline.settings import DigiCertSettings, load_settings
from tests.fakes.digicert import FakeDigiCert
from tests.fakes.server import Fault
from tests.support import make_csr
from tests.support.testca import TestCA

TEST_CA = TestCA.create()
ALICE = Subscriber("alice@example.com", "Alice", "Example")
ORDER_POST = r"/services/v2/order/certificate/secure_email_\w+"
ORDER_INFO = r"/services/v2/order/certificate/\d+"


@pytest.fixture
def fake() -> Iterator[FakeDigiCert]:
    with FakeDigiCert(TEST_CA) as server:
        server.limiter.limits = [(100_000, 5.0)]  # the rate-limit test sets its own
        yield server  # type: ignore[misc]


@pytest.fixture
def anchors(tmp_path: Path) -> list[str]:
    path = tmp_path / "digicert-root.pem"
    path.write_bytes(TEST_CA.root_pem)
    return [str(path)]


def adapter(
    fake: FakeDigiCert,
    anchors: list[str],
    *,
    sleeps: list[float] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **overrides: object,
) -> DigiCertCA:
    settings = DigiCertSettings(organization_id=123456, timeout_seconds=1.0)
    for name, value in overrides.items():
        setattr(settings, name, value)
    return DigiCertCA(
        settings,
        api_key=fake.api_key if api_key is None else api_key,
        trust_anchor_paths=anchors,
        base_url=base_url or fake.url + "/services/v2",
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )


def issued_order_id(ca: DigiCertCA, key: str = "req-1") -> str:
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key=key)
    assert ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED
    return order.order_id


def test_order_carries_api_key_header_settings_and_idempotency_marker(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors, usage="signing", profile_type="multipurpose", validity_years=2)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-42")

    assert order.status is OrderStatus.PENDING
    (call,) = fake.calls_to("POST", ORDER_POST)
    assert call.path.endswith("/secure_email_mailbox")
    assert call.headers["x-dc-devkey"] == fake.api_key
    body = call.json()
    assert body["certificate"]["emails"] == ["alice@example.com"]
    assert body["certificate"]["profile_type"] == "multipurpose"
    assert body["certificate"]["usage_designation"] == {"primary_usage": "signing"}
    assert body["organization"] == {"id": 123456}
    assert body["validity_years"] == 2 and body["skip_approval"] is True
    assert body["comments"] == marker_for("req-42")


def test_pending_order_issues_and_fetch_splits_pem_all_into_leaf_and_chain(
    fake: FakeDigiCert, anchors: list[str]
) -> None:
    fake.pending_polls = 2
    ca = adapter(fake, anchors)
    csr, key = make_csr(ALICE.mailbox)
    order = ca.submit(csr_pem=csr, subscriber=ALICE, idempotency_key="req-1")
    assert ca.poll(order_id=order.order_id).status is OrderStatus.PENDING
    assert ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED

    issued = ca.fetch(order_id=order.order_id)
    leaf = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    assert issued.chain_pem == (TEST_CA.issuing_pem,)  # issuing CA first; the root comes from trust anchors
    assert ca.trust_anchors() == [TEST_CA.root_pem]
    assert fake.calls_to("GET", r"/services/v2/certificate/\d+/download/format/pem_all")


def test_immediate_issuance_is_reported_by_submit(fake: FakeDigiCert, anchors: list[str]) -> None:
    fake.issue_mode = "immediate"
    ca = adapter(fake, anchors)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    assert order.status is OrderStatus.ISSUED
    assert ca.fetch(order_id=order.order_id).chain_pem == (TEST_CA.issuing_pem,)


def test_order_waiting_on_mailbox_validation_is_flagged_until_the_employee_validates(
    fake: FakeDigiCert, anchors: list[str]
) -> None:
    fake.require_validation = True
    ca = adapter(fake, anchors)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    waiting = ca.poll(order_id=order.order_id)
    assert waiting.status is OrderStatus.PENDING and waiting.awaiting_validation
    with pytest.raises(RetryLater):
        ca.fetch(order_id=order.order_id)

    fake.validate(order.order_id)
    done = ca.poll(order_id=order.order_id)
    assert done.status is OrderStatus.ISSUED and not done.awaiting_validation


def test_rejected_order_reads_plainly_for_the_employee(fake: FakeDigiCert, anchors: list[str]) -> None:
    fake.pending_polls = 99
    ca = adapter(fake, anchors)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    fake.reject(order.order_id)
    polled = ca.poll(order_id=order.order_id)
    assert polled.status is OrderStatus.REJECTED
    assert "IT has been told" in polled.user_message and "rejected" in polled.detail


def test_refused_order_keeps_digicerts_words_for_admins_only(fake: FakeDigiCert, anchors: list[str]) -> None:
    fake.reject_next = "The email domain example.com is not allowed for this account."
    ca = adapter(fake, anchors)
    with pytest.raises(PermanentFailure) as err:
        ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    assert "example.com is not allowed" in err.value.admin_detail and "order_rejected" in err.value.admin_detail
    assert "order_rejected" not in err.value.user_reason and err.value.user_reason.endswith(".")
    assert fake.api_key not in err.value.admin_detail + err.value.user_reason


def test_sponsor_orders_need_and_send_the_employees_names(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors, product="secure_email_sponsor")
    with pytest.raises(PermanentFailure) as err:
        ca.submit(
            csr_pem=make_csr("bob@example.com")[0], subscriber=Subscriber("bob@example.com"), idempotency_key="req-1"
        )
    assert "first and last name" in err.value.user_reason
    assert not fake.calls_to("POST", ORDER_POST)  # nothing ordered

    ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-2")
    body = fake.calls_to("POST", ORDER_POST)[0].json()
    assert body["certificate"]["individual"] == {"first_name": "Alice", "last_name": "Example"}


def test_5xx_on_reads_is_retried_and_persistent_5xx_means_retry_later(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    fake.fail_next(Fault(status=502), path=ORDER_INFO + r"\Z", times=2)
    assert ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED

    fake.fail_next(Fault(status=503), path=ORDER_INFO + r"\Z", times=3)
    with pytest.raises(RetryLater):
        ca.poll(order_id=order.order_id)


def test_5xx_on_the_order_is_never_blindly_retried(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors)
    fake.fail_next(Fault(status=500, after=True), path=ORDER_POST)  # the order took effect, the answer is an error
    with pytest.raises(OutcomeUnknown):
        ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    assert len(fake.calls_to("POST", ORDER_POST)) == 1
    found = ca.find_order(idempotency_key="req-1")
    assert found is not None and found.order_id == str(next(iter(fake.orders)))
    assert fake.orders_per_marker()[marker_for("req-1")] == 1


@pytest.mark.parametrize("fault", [Fault(delay=1.5, after=True), Fault(drop=True, after=True)], ids=["timeout", "lost"])
def test_unknown_outcome_is_resolved_by_lookup_not_by_a_second_order(
    fake: FakeDigiCert, anchors: list[str], fault: Fault
) -> None:
    ca = adapter(fake, anchors)
    fake.fail_next(fault, path=ORDER_POST)
    with pytest.raises(OutcomeUnknown):
        ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-7")
    found = ca.find_order(idempotency_key="req-7")
    assert found is not None and found.status in (OrderStatus.PENDING, OrderStatus.ISSUED)
    assert ca.find_order(idempotency_key="req-other") is None
    assert len(fake.orders) == 1


def test_malformed_answers(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors)
    fake.fail_next(Fault(malformed=True), path=ORDER_POST)
    with pytest.raises(OutcomeUnknown):  # a 200 we cannot read may still be a placed order
        ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    assert ca.find_order(idempotency_key="req-1") is None  # this one never reached the CA

    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    fake.fail_next(Fault(malformed=True), path=ORDER_INFO + r"\Z")  # a cut-off read is asked again
    assert ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED
    fake.fail_next(Fault(malformed=True), path=ORDER_INFO + r"\Z", times=3)
    with pytest.raises(RetryLater):
        ca.poll(order_id=order.order_id)


def test_429_honours_retry_after_else_waits_the_documented_window(fake: FakeDigiCert, anchors: list[str]) -> None:
    sleeps: list[float] = []
    ca = adapter(fake, anchors, sleeps=sleeps)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    fake.fail_next(Fault(status=429, retry_after="2"), path=ORDER_INFO + r"\Z")
    assert ca.poll(order_id=order.order_id).status is OrderStatus.ISSUED
    assert sleeps == [2.0]

    sleeps.clear()
    fake.limiter.limits = [(1, 5.0)]  # the fake's own limiter, DigiCert's 429 body, no Retry-After
    with pytest.raises(RetryLater) as err:
        for _ in range(3):
            ca.poll(order_id=order.order_id)
    assert err.value.delay == 5.0 and "request_limit_exceeded" in err.value.admin_detail
    assert sleeps and all(s == 5.0 for s in sleeps)


def test_lookup_is_configurable_and_refuses_to_guess(fake: FakeDigiCert, anchors: list[str]) -> None:
    with pytest.raises(LookupUnsupported):
        adapter(fake, anchors, order_lookup=False).find_order(idempotency_key="req-1")

    ca = adapter(fake, anchors)
    ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    fake.echo_marker_as = "notes"
    found = ca.find_order(idempotency_key="req-1")
    assert found is not None
    fake.echo_marker_as = None  # DigiCert does not echo the comments at all: "not found" would be a guess
    with pytest.raises(LookupUnsupported):
        adapter(fake, anchors).find_order(idempotency_key="req-2")


def test_revoke_sends_the_reason_and_repeats_harmlessly(fake: FakeDigiCert, anchors: list[str]) -> None:
    ca = adapter(fake, anchors)
    order_id = issued_order_id(ca)
    ca.revoke(order_id=order_id, serial="ab", reason=RevocationReason.KEY_COMPROMISE)
    assert fake.orders[int(order_id)].status == "revoked"
    assert fake.orders[int(order_id)].revocation_reason == "key_compromise"
    ca.revoke(order_id=order_id, serial="ab", reason=RevocationReason.KEY_COMPROMISE)
    assert ca.poll(order_id=order_id).status is OrderStatus.REJECTED


def test_cancel_pending_order_and_tolerate_final_or_gone_orders(fake: FakeDigiCert, anchors: list[str]) -> None:
    fake.pending_polls = 99
    ca = adapter(fake, anchors)
    order = ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-1")
    ca.cancel(order_id=order.order_id)
    assert ca.poll(order_id=order.order_id).status is OrderStatus.CANCELLED
    ca.cancel(order_id=order.order_id)  # already final
    ca.cancel(order_id="999999")  # unknown to DigiCert
    fake.pending_polls = 1
    issued = issued_order_id(ca, "req-2")
    ca.cancel(order_id=issued)
    assert ca.poll(order_id=issued).status is OrderStatus.ISSUED


def test_doctor_reports_plain_problems(fake: FakeDigiCert, anchors: list[str]) -> None:
    assert adapter(fake, anchors).check() == []
    assert "API key" in " ".join(adapter(fake, anchors, api_key="wrong").check())
    assert "API key is missing" in " ".join(adapter(fake, anchors, api_key="").check())
    assert "organization 777 is not in this account" in " ".join(adapter(fake, anchors, organization_id=777).check())
    fake.enabled_products.discard("secure_email_mailbox")
    assert "not enabled" in " ".join(adapter(fake, anchors).check())
    assert "825 days" in " ".join(adapter(fake, anchors, validity_years=3).check())
    assert "trust_anchors is empty" in " ".join(adapter(fake, []).check())
    unreachable = adapter(fake, anchors, base_url="http://127.0.0.1:9/services/v2").check()
    assert any(p.startswith("Cannot reach DigiCert") for p in unreachable)
    lines = adapter(fake, anchors).describe()
    assert any("secure_email_mailbox" in line for line in lines)


def test_credentials_never_reach_logs_or_messages(
    fake: FakeDigiCert, anchors: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ca = adapter(fake, anchors)
    messages: list[str] = []
    fake.reject_next = "refused"
    fake.fail_next(Fault(status=503), path=ORDER_INFO + r"\Z", times=3)
    for action in (
        lambda: ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="r1"),
        lambda: ca.poll(order_id="1000"),
    ):
        with pytest.raises((PermanentFailure, RetryLater)) as err:
            action()
        messages.append(str(err.value) + repr(err.value.__dict__))
    messages += adapter(fake, anchors, api_key="wrong-secret-key").check()
    everything = caplog.text + " ".join(messages)
    assert fake.api_key not in everything and "wrong-secret-key" not in everything


def test_from_settings_reads_base_url_and_key_from_config_and_environment(fake: FakeDigiCert, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(TEST_CA.root_pem)
    settings = load_settings(
        None,
        {
            "CERTPORTAL__CA__BACKEND": "digicert",
            "CERTPORTAL__CA__TRUST_ANCHORS": str(tmp_path / "root.pem"),
            "CERTPORTAL__CA__DIGICERT__BASE_URL": fake.url + "/services/v2",
            "CERTPORTAL__CA__DIGICERT__ORGANIZATION_ID": "123456",
            "DIGICERT_API_KEY": fake.api_key,
        },
    )
    ca = from_settings(settings, clock=SystemClock())
    assert ca.check() == []
    assert ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="k").status in (
        OrderStatus.PENDING,
        OrderStatus.ISSUED,
    )
    assert DigiCertSettings().base_url == "https://www.digicert.com/services/v2"


def test_split_bundle_takes_any_order_and_pkcs7() -> None:
    leaf = TEST_CA.issue(make_csr("carol@example.com")[0], "carol@example.com")
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    for data in (
        leaf_pem + TEST_CA.issuing_pem + TEST_CA.root_pem,
        TEST_CA.root_pem + TEST_CA.issuing_pem + leaf_pem,
        pkcs7.serialize_certificates([TEST_CA.root, leaf, TEST_CA.issuing], serialization.Encoding.DER),
    ):
        assert split_bundle(data, vendor="x", order_id="1") == (leaf_pem, (TEST_CA.issuing_pem,))
    with pytest.raises(RetryLater):
        split_bundle(b"-----BEGIN PKCS7-----\ngarbage\n-----END PKCS7-----\n", vendor="x", order_id="1")
    with pytest.raises(PermanentFailure):
        split_bundle(TEST_CA.issuing_pem + TEST_CA.root_pem, vendor="x", order_id="1")
