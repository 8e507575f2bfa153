"""The provisioning pipeline in-process on embedded defaults: outcomes, retries, failures and revocation.

A CA that fails in the ways real CAs do is the embedded CA behind a thin wrapper; what is
asserted is what an employee or admin would notice (request state, the reason given,
notifications, orders at the CA, the CRL).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509

from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate, revoke_certificate
from pipeline.drive import run_until_settled
from pipeline.errors import LookupUnsupported, OutcomeUnknown, RetryLater
from pipeline.ports import NotificationKind, RevocationReason
from pipeline.provision import idempotency_key
from pipeline.requests import create_request, get_request
from tests.support.core import exports_in, key_matches, openssl, private_file


def request_for(p, mailbox: str = "alice@example.com", key_type: str | None = None) -> str:
    return create_request(p, mailbox=mailbox, requested_by="cli:test", key_type=key_type, approved=True)["id"]


def settle(p, request_id: str) -> str:
    return run_until_settled(p, [request_id], timeout=60)[request_id]


def orders(p) -> list[dict[str, Any]]:
    return [dict(r) for r in p.ca.state.conn.execute("SELECT * FROM orders")]


class FlakyCA:
    """The embedded CA, failing the first ``failures`` submits in the way ``mode`` says.

    ``unavailable``: refused before anything happened (503). ``lost-answer``: the CA took
    the order but the answer never came back. ``lost-answer-unsearchable``: the same, at a
    CA that cannot look orders up by idempotency key.
    """

    def __init__(self, real: Any, *, failures: int, mode: str) -> None:
        self.real, self.failures, self.mode = real, failures, mode
        self.name = real.name
        self.submits = 0

    def submit(self, **kwargs: Any) -> Any:
        self.submits += 1
        if self.submits > self.failures:
            return self.real.submit(**kwargs)
        if self.mode == "unavailable":
            raise RetryLater("CA answered 503")
        self.real.submit(**kwargs)  # the CA took the order, but the answer was lost
        raise OutcomeUnknown("CA timed out after the order was sent")

    def find_order(self, **kwargs: Any) -> Any:
        if self.mode == "lost-answer-unsearchable":
            raise LookupUnsupported("this CA cannot search by idempotency key")
        return self.real.find_order(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_issuance_records_the_certificate_tells_the_employee_and_wipes_working_secrets(pipeline, notifier):
    request_id = request_for(pipeline)
    assert settle(pipeline, request_id) == "issued"
    cert = current_certificate(pipeline, "alice@example.com")
    assert cert is not None and cert["status"] == "active" and cert["key_type"] == "ec-p256"
    work = pipeline.store.one("SELECT * FROM work WHERE request_id = ?", (request_id,))
    assert (work["password_enc"], work["key_enc"], work["pfx_enc"]) == (None, None, None)
    kinds = [n.kind for n in notifier.sent]
    assert kinds.index(NotificationKind.PROVISIONING) < kinds.index(NotificationKind.CERTIFICATE_READY)
    ready = next(n for n in notifier.sent if n.kind == NotificationKind.CERTIFICATE_READY)
    assert ready.serial == cert["serial"] and ready.mailbox == "alice@example.com"
    secret = pipeline.vault.retrieve(ref=cert["vault_ref"], reason="test")
    assert all(secret.password not in n.text for n in notifier.sent)
    assert pipeline.audit.verify().ok


@pytest.mark.parametrize("mode", ["unavailable", "lost-answer"])
def test_transient_ca_failures_retry_and_still_place_one_order(pipeline, mode):
    flaky = FlakyCA(pipeline.ca, failures=2, mode=mode)
    pipeline.ca = flaky
    request_id = request_for(pipeline)
    assert settle(pipeline, request_id) == "issued"
    assert [o["idempotency_key"] for o in orders(pipeline)] == [idempotency_key(request_id)]
    job = pipeline.store.one("SELECT attempts, state FROM jobs WHERE request_id = ?", (request_id,))
    assert job["state"] == "done" and job["attempts"] >= 1
    if mode == "lost-answer":
        assert flaky.submits == 1  # the retry found the order instead of placing another


def test_an_order_whose_fate_cannot_be_looked_up_is_parked_not_reordered(pipeline, notifier):
    flaky = FlakyCA(pipeline.ca, failures=1, mode="lost-answer-unsearchable")
    pipeline.ca = flaky
    request_id = request_for(pipeline)
    assert settle(pipeline, request_id) == "parked"
    assert flaky.submits == 1
    assert len(orders(pipeline)) == 1
    assert get_request(pipeline, request_id)["state"] == "provisioning"
    assert any(n.kind == NotificationKind.NEEDS_RECONCILIATION for n in notifier.sent)


def test_a_ca_that_stays_down_fails_the_request_in_plain_words(pipeline, notifier):
    pipeline.settings.worker.max_attempts = 3
    pipeline.ca = FlakyCA(pipeline.ca, failures=100, mode="unavailable")
    request_id = request_for(pipeline)
    assert settle(pipeline, request_id) == "failed"
    request = get_request(pipeline, request_id)
    assert request["failure_reason"] == "The certificate service could not be reached for too long; IT has been told."
    assert "503" in request["admin_detail"]
    failed = [n for n in notifier.sent if n.kind == NotificationKind.REQUEST_FAILED]
    assert len(failed) == 1 and "could not be issued" in failed[0].text
    assert orders(pipeline) == []


def test_a_rejected_order_fails_the_request_and_issues_nothing(make_settings, notifier):
    p = build_pipeline(make_settings(**{"ca.local.pki_url": "http://localhost/pki"}), notifier=notifier)
    try:
        request_id = request_for(p)
        assert settle(p, request_id) == "failed"
        request = get_request(p, request_id)
        assert request["failure_reason"] == "The certificate could not be issued; IT has the details."
        assert "pre-issuance lint refused" in request["admin_detail"]
        assert p.store.all("SELECT * FROM certificates") == []
        assert [o["status"] for o in orders(p)] == ["rejected"]
        assert any(e["action"] == "request.failed" for e in p.audit.entries())
    finally:
        p.store.close()


REASONS = {
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.UNSPECIFIED: None,
}


def test_every_revocation_reason_reaches_the_crl(pipeline):
    serials = {}
    for i, reason in enumerate(REASONS):
        mailbox = f"user{i}@example.com"
        assert settle(pipeline, request_for(pipeline, mailbox)) == "issued"
        serials[reason] = current_certificate(pipeline, mailbox)["serial"]
        revoke_certificate(pipeline, serial=serials[reason], reason=reason, actor="cli:test")
    crl = pipeline.ca.crl()
    assert crl.is_signature_valid(pipeline.ca.issuing_certificate().public_key())
    for reason, flag in REASONS.items():
        entry = crl.get_revoked_certificate_by_serial_number(int(serials[reason], 16))
        assert entry is not None, reason
        try:
            got = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            got = None
        assert got == flag, reason
    # Revoking twice changes nothing and adds no second CRL entry.
    revoke_certificate(
        pipeline, serial=serials[RevocationReason.SUPERSEDED], reason=RevocationReason.SUPERSEDED, actor="x"
    )
    assert len(list(pipeline.ca.crl())) == len(REASONS)


def test_a_renewal_keeps_the_old_certificate_exportable(pipeline, tmp_path):
    first = request_for(pipeline)
    assert settle(pipeline, first) == "issued"
    old = current_certificate(pipeline, "alice@example.com")
    second = request_for(pipeline)
    assert settle(pipeline, second) == "issued"
    new = current_certificate(pipeline, "alice@example.com")
    assert new["serial"] != old["serial"]
    old_row = pipeline.store.one("SELECT status, superseded_by FROM certificates WHERE serial = ?", (old["serial"],))
    assert old_row == {"status": "superseded", "superseded_by": new["serial"]}
    for cert in (old, new):
        secret = pipeline.vault.retrieve(ref=cert["vault_ref"], reason="test")
        (tmp_path / f"{cert['serial']}.pfx").write_bytes(secret.pfx)
        (tmp_path / f"{cert['serial']}.txt").write_text(secret.password + "\n")
    pairs = {e.pfx_path.stem: e.open() for e in exports_in(tmp_path)}
    assert key_matches(pairs[old["serial"]].cert.certificate, pairs[old["serial"]].key)
    assert not key_matches(pairs[new["serial"]].cert.certificate, pairs[old["serial"]].key)


def test_a_pending_order_does_not_hold_up_the_worker(make_settings, notifier):
    """With one worker thread, a slow order waits in the queue while a later request is issued."""
    p = build_pipeline(make_settings(**{"worker.threads": 1, "ca.local.issue_delay_seconds": 1.5}), notifier=notifier)

    def only_the_first_order_is_slow(point: str) -> None:
        if point == "order:submitted":
            p.ca.settings.issue_delay_seconds = 0.0

    p.hook = only_the_first_order_is_slow
    try:
        slow = request_for(p, "slow@example.com")
        assert run_until_settled(p, [slow], timeout=0.0)[slow] == "approved"  # nothing ran yet
        fast = request_for(p, "fast@example.com")
        assert run_until_settled(p, [slow, fast], timeout=60) == {slow: "issued", fast: "issued"}
        done = {r["mailbox"]: r["created_at"] for r in p.store.all("SELECT mailbox, created_at FROM certificates")}
        assert done["fast@example.com"] < done["slow@example.com"]
        polls = p.store.one("SELECT polls FROM work WHERE request_id = ?", (slow,))["polls"]
        assert polls >= 1  # the slow order was rescheduled, not waited on
    finally:
        p.store.close()


@pytest.mark.parametrize(
    ("profile", "algorithm"),
    [("compatible", "pbeWithSHA1And3-KeyTripleDES-CBC"), ("modern", "PBES2, PBKDF2, AES-256-CBC")],
)
def test_pfx_profile_and_friendly_name_follow_the_settings(make_settings, notifier, tmp_path, profile, algorithm):
    settings = make_settings(**{"crypto.pkcs12_profile": profile, "crypto.friendly_name": "Work mail {mailbox}"})
    p = build_pipeline(settings, notifier=notifier)
    try:
        assert settle(p, request_for(p)) == "issued"
        cert = current_certificate(p, "alice@example.com")
        secret = p.vault.retrieve(ref=cert["vault_ref"], reason="test")
    finally:
        p.store.close()
    pfx = private_file(tmp_path / "a.pfx", secret.pfx)
    passin = f"file:{private_file(tmp_path / 'a.txt', secret.password.encode())}"
    info = openssl("pkcs12", "-info", "-noout", "-in", pfx, "-passin", passin)
    assert info.returncode == 0 and algorithm.encode() in info.stdout + info.stderr
    bags = openssl("pkcs12", "-in", pfx, "-nokeys", "-clcerts", "-passin", passin)
    assert b"friendlyName: Work mail alice@example.com" in bags.stdout
