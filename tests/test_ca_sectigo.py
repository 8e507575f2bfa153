"""The Sectigo SCM adapter against the loopback SCM fake, over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from integrations.ca.sectigo import SectigoCA, from_settings
from integrations.ca.sectigo_api import MARKER_FIELD, marker_for
from pipeline.clock import SystemClock
from pipeline.errors import LookupUnsupported, OutcomeUnknown, PermanentFailure, RetryLater
from pipeline.ports import OrderStatus, RevocationReason, Subscriber
from pipeline.settings import SectigoSettings, load_settings
from tests.fakes.digicert import SlidingWindowLimiter
from tests.fakes.sectigo import FakeSectigo
from tests.fakes.server import Fault
from tests.support import make_csr
from tests.support.testca import TestCA

TEST_CA = TestCA.create()
ALICE = Subscriber("alice@example.com", "Alice", "Example")
ENROLL = r"/api/smime/v1/enroll"
COLLECT = r"/api/smime/v1/collect/\d+"


@pytest.fixture
def fake() -> Iterator[FakeSectigo]:
    with FakeSectigo(TEST_CA) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def anchors(tmp_path: Path) -> list[str]:
    path = tmp_path / "sectigo-root.pem"
    path.write_bytes(TEST_CA.root_pem)
    return [str(path)]


def adapter(
    fake: FakeSectigo,
    anchors: list[str],
    *,
    sleeps: list[float] | None = None,
    password: str | None = None,
    base_url: str | None = None,
    **overrides: object,
) -> SectigoCA:
    settings = SectigoSettings(
        customer_uri="example", org_id=4321, cert_type=5678, term=365, timeout_seconds=1.0, order_lookup=True
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return SectigoCA(
        settings,
        login=fake.login,
        password=fake.password if password is None else password,
        trust_anchor_paths=anchors,
        base_url=base_url or fake.url + "/api",
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )


def submit(ca: SectigoCA, key: str = "req-1", who: Subscriber = ALICE) -> str:
    return ca.submit(csr_pem=make_csr(who.mailbox)[0], subscriber=who, idempotency_key=key).order_id


def test_enroll_sends_login_headers_names_mailbox_type_term_and_marker(fake: FakeSectigo, anchors: list[str]) -> None:
    order = adapter(fake, anchors, term=730).submit(
        csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="req-9"
    )
    assert order.status is OrderStatus.PENDING
    (call,) = fake.calls_to("POST", ENROLL)
    assert (call.headers["login"], call.headers["password"], call.headers["customeruri"]) == (
        fake.login,
        fake.password,
        "example",
    )
    body = call.json()
    assert (body["orgId"], body["certType"], body["term"], body["email"]) == (4321, 5678, 730, "alice@example.com")
    assert (body["firstName"], body["lastName"]) == ("Alice", "Example")
    assert body["customFields"] == [{"name": MARKER_FIELD, "value": marker_for("req-9")}]
    assert order.order_id == str(next(iter(fake.enrollments)))


def test_collect_pending_codes_mean_not_yet_then_fetch_gives_leaf_and_chain(
    fake: FakeSectigo, anchors: list[str]
) -> None:
    fake.pending_polls = 2
    ca = adapter(fake, anchors)
    csr, key = make_csr(ALICE.mailbox)
    order_id = ca.submit(csr_pem=csr, subscriber=ALICE, idempotency_key="req-1").order_id
    assert ca.poll(order_id=order_id).status is OrderStatus.PENDING
    with pytest.raises(RetryLater):  # -183 on collect: not yet
        ca.fetch(order_id=order_id)
    assert ca.poll(order_id=order_id).status is OrderStatus.ISSUED

    issued = ca.fetch(order_id=order_id)
    leaf = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert leaf.public_key() == key.public_key()
    assert issued.chain_pem == (TEST_CA.issuing_pem,)
    assert fake.calls_to("GET", COLLECT)[-1].query["format"] == ["x509"]
    assert ca.trust_anchors() == [TEST_CA.root_pem]


def test_names_are_required_before_anything_is_sent(fake: FakeSectigo, anchors: list[str]) -> None:
    with pytest.raises(PermanentFailure) as err:
        submit(adapter(fake, anchors), who=Subscriber("bob@example.com"))
    assert "first and last name" in err.value.user_reason
    assert not fake.calls_to("POST", ENROLL)


def test_rejected_and_revoked_orders(fake: FakeSectigo, anchors: list[str]) -> None:
    fake.pending_polls = 99
    ca = adapter(fake, anchors)
    rejected, revoked = submit(ca, "r1"), submit(ca, "r2")
    fake.reject(rejected)
    polled = ca.poll(order_id=rejected)
    assert polled.status is OrderStatus.REJECTED and "rejected" in polled.detail
    assert "IT has been told" in polled.user_message
    fake.approve(revoked)
    ca.revoke(order_id=revoked, serial="01", reason=RevocationReason.SUPERSEDED)
    assert ca.poll(order_id=revoked).status is OrderStatus.REJECTED  # -192
    with pytest.raises(PermanentFailure):
        ca.fetch(order_id=revoked)


def test_refused_enrollment_keeps_sectigos_words_for_admins(fake: FakeSectigo, anchors: list[str]) -> None:
    with pytest.raises(PermanentFailure) as err:
        submit(adapter(fake, anchors, term=500))
    assert "-7: Term 500 is not allowed" in err.value.admin_detail
    assert "-7" not in err.value.user_reason
    fake.custom_fields = set()  # the marker field was never created in SCM
    with pytest.raises(PermanentFailure) as err:
        submit(adapter(fake, anchors))
    assert MARKER_FIELD in err.value.admin_detail


def test_revoke_sends_a_reason_and_repeats_harmlessly(fake: FakeSectigo, anchors: list[str]) -> None:
    ca = adapter(fake, anchors)
    order_id = submit(ca)
    fake.approve(order_id)
    ca.revoke(order_id=order_id, serial="0A", reason=RevocationReason.KEY_COMPROMISE)
    assert fake.enrollments[int(order_id)].revocation_reason.startswith("keyCompromise")
    ca.revoke(order_id=order_id, serial="0A", reason=RevocationReason.KEY_COMPROMISE)


def test_cancel_withdraws_pending_and_leaves_final_orders_alone(fake: FakeSectigo, anchors: list[str]) -> None:
    fake.pending_polls = 99
    ca = adapter(fake, anchors)
    pending, issued = submit(ca, "c1"), submit(ca, "c2")
    ca.cancel(order_id=pending)
    assert ca.poll(order_id=pending).status is not OrderStatus.PENDING
    ca.cancel(order_id=pending)  # already final
    fake.approve(issued)
    ca.cancel(order_id=issued)
    assert ca.poll(order_id=issued).status is OrderStatus.ISSUED


@pytest.mark.parametrize(
    "fault",
    [Fault(delay=1.5, after=True), Fault(drop=True, after=True), Fault(status=502, after=True)],
    ids=["timeout", "lost", "5xx-after"],
)
def test_unknown_outcome_is_resolved_by_lookup_not_by_a_second_order(
    fake: FakeSectigo, anchors: list[str], fault: Fault
) -> None:
    ca = adapter(fake, anchors)
    submit(ca, "other")
    fake.fail_next(fault, path=ENROLL)
    with pytest.raises(OutcomeUnknown):
        submit(ca, "req-5")
    assert len(fake.calls_to("POST", ENROLL)) == 2  # never retried blindly
    found = ca.find_order(idempotency_key="req-5")
    assert found is not None and found.status is OrderStatus.PENDING
    assert fake.orders_per_marker()[marker_for("req-5")] == 1
    assert ca.find_order(idempotency_key="never-sent") is None


def test_lookup_is_off_by_default_and_refuses_to_guess(fake: FakeSectigo, anchors: list[str]) -> None:
    assert SectigoSettings().order_lookup is False
    with pytest.raises(LookupUnsupported):
        adapter(fake, anchors, order_lookup=False).find_order(idempotency_key="req-1")
    ca = adapter(fake, anchors)
    submit(ca)
    fake.show_custom_fields = False
    with pytest.raises(LookupUnsupported):
        ca.find_order(idempotency_key="req-2")


def test_transient_faults(fake: FakeSectigo, anchors: list[str]) -> None:
    sleeps: list[float] = []
    ca = adapter(fake, anchors, sleeps=sleeps)
    order_id = submit(ca)
    fake.fail_next(Fault(status=503), path=COLLECT, times=2)
    assert ca.poll(order_id=order_id).status is OrderStatus.PENDING
    fake.fail_next(Fault(status=503), path=COLLECT, times=3)
    with pytest.raises(RetryLater):
        ca.poll(order_id=order_id)
    fake.fail_next(Fault(malformed=True), path=COLLECT)  # a 200 that is no certificate
    with pytest.raises(RetryLater):
        ca.poll(order_id=order_id)
    fake.fail_next(Fault(malformed=True), path=r"/api/smime/v1/types", times=2)
    assert ca.check() == []  # cut-off JSON reads are asked again
    sleeps.clear()
    fake.fail_next(Fault(status=429, retry_after="3"), path=COLLECT)
    ca.poll(order_id=order_id)
    assert sleeps == [3.0]
    fake.limiter = SlidingWindowLimiter([(1, 60.0)])
    with pytest.raises(RetryLater) as err:
        for _ in range(2):
            ca.poll(order_id=order_id)
    assert err.value.delay == 5.0 and "Too many requests" in err.value.admin_detail


def test_doctor_checks_credentials_type_and_term_and_lists_types(fake: FakeSectigo, anchors: list[str]) -> None:
    assert adapter(fake, anchors).check() == []
    assert "Sectigo refused" in " ".join(adapter(fake, anchors, password="wrong").check())
    assert "credentials are missing" in " ".join(adapter(fake, anchors, password="").check())
    assert "type 9999 is not available" in " ".join(adapter(fake, anchors, cert_type=9999).check())
    assert "term 730 is not offered" in " ".join(adapter(fake, anchors, cert_type=5679, term=730).check())
    assert "does not exist" in " ".join(adapter(fake, anchors, org_id=1).check())
    assert "825 days" in " ".join(adapter(fake, anchors, term=900).check())
    unreachable = adapter(fake, anchors, base_url="http://127.0.0.1:9/api").check()
    assert any(p.startswith("Cannot reach Sectigo") for p in unreachable)
    described = "\n".join(adapter(fake, anchors).describe())
    assert "5678: Mailbox-validated S/MIME (Strict), terms 365, 730 days (configured)" in described
    assert "5679: Sponsor-validated" in described


def test_credentials_never_reach_logs_or_messages(
    fake: FakeSectigo, anchors: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for ca, action in (
        (adapter(fake, anchors, password="not-the-password"), lambda c: submit(c)),
        (adapter(fake, anchors, term=500), lambda c: submit(c)),
    ):
        with pytest.raises(PermanentFailure) as err:
            action(ca)
        texts.append(str(err.value) + repr(err.value.__dict__))
    texts += adapter(fake, anchors, password="not-the-password").check()
    everything = caplog.text + " ".join(texts)
    assert fake.password not in everything and "not-the-password" not in everything


def test_from_settings_reads_sections_and_environment(fake: FakeSectigo, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(TEST_CA.root_pem)
    settings = load_settings(
        None,
        {
            "CERTPORTAL__CA__BACKEND": "sectigo",
            "CERTPORTAL__CA__TRUST_ANCHORS": str(tmp_path / "root.pem"),
            "CERTPORTAL__CA__SECTIGO__BASE_URL": fake.url + "/api",
            "CERTPORTAL__CA__SECTIGO__CUSTOMER_URI": "example",
            "CERTPORTAL__CA__SECTIGO__ORG_ID": "4321",
            "CERTPORTAL__CA__SECTIGO__CERT_TYPE": "5678",
            "SECTIGO_LOGIN": fake.login,
            "SECTIGO_PASSWORD": fake.password,
        },
    )
    ca = from_settings(settings, clock=SystemClock())
    assert ca.check() == []
    assert ca.submit(csr_pem=make_csr(ALICE.mailbox)[0], subscriber=ALICE, idempotency_key="k").status is (
        OrderStatus.PENDING
    )
    assert SectigoSettings().base_url == "https://cert-manager.com/api"
