"""Renewal keeps history: a fresh key, the predecessor superseded but recoverable, the directory switched at once."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate, revoke_certificate
from pipeline.crypto.pkcs12 import open_pfx
from pipeline.drive import run_until_settled
from pipeline.errors import PolicyError
from pipeline.lifecycle.renewal import request_renewal
from pipeline.ports import RevocationReason
from tests.support.lifecycle import RecordingDirectory, issue


def spki(pem: str) -> bytes:
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_renewal_brings_a_new_key_and_keeps_the_old_certificate_recoverable(pipeline):
    p = pipeline
    p.directory = RecordingDirectory()
    old = issue(p, "alice@example.com", slack_user_id="UALICE")
    assert p.directory.values["alice@example.com"] == {old["sha256"]}

    renewal = request_renewal(p, mailbox="alice@example.com", requested_by="UALICE", source="slack")
    assert (renewal["state"], renewal["kind"], renewal["predecessor_serial"]) == ("approved", "renew", old["serial"])
    assert run_until_settled(p, [renewal["id"]], timeout=60)[renewal["id"]] == "issued"

    new = current_certificate(p, "alice@example.com")
    assert new["serial"] != old["serial"]
    assert spki(new["cert_pem"]) != spki(old["cert_pem"])
    assert new["slack_user_id"] == "UALICE"
    history = p.store.all("SELECT * FROM certificates WHERE mailbox = 'alice@example.com' ORDER BY created_at")
    assert [(c["serial"], c["status"]) for c in history] == [(old["serial"], "superseded"), (new["serial"], "active")]
    assert history[0]["superseded_by"] == new["serial"]
    assert history[0]["revoked_at"] is None  # not revoked: signatures made with it stay verifiable
    # Senders encrypt to the new key at once; the old value left the directory.
    assert p.directory.values["alice@example.com"] == {new["sha256"]}

    # Old encrypted mail still needs the old key: it is still in the vault, and it is the old certificate's key.
    for cert in (old, new):
        secret = p.vault.retrieve(ref=cert["vault_ref"], reason="test")
        bundle = open_pfx(secret.pfx, secret.password)
        assert bundle.cert is not None and format(bundle.cert.certificate.serial_number, "x") == cert["serial"]
        key_spki = bundle.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert key_spki == spki(cert["cert_pem"])


def test_renewal_needs_approval_when_policy_says_so(make_settings, notifier):
    p = build_pipeline(make_settings(**{"policy.auto_approve_renewals": False}), notifier=notifier)
    try:
        issue(p, "bob@example.com")
        renewal = request_renewal(p, mailbox="bob@example.com", requested_by="UBOB", source="slack")
        assert renewal["state"] == "pending_approval"
        assert p.store.one("SELECT count(*) AS n FROM jobs WHERE request_id = ?", (renewal["id"],))["n"] == 0
    finally:
        p.store.close()


def test_nothing_to_renew_and_one_renewal_at_a_time(pipeline):
    p = pipeline
    with pytest.raises(PolicyError, match="no current certificate"):
        request_renewal(p, mailbox="carol@example.com", requested_by="UCAROL", source="slack")
    cert = issue(p, "carol@example.com")
    request_renewal(p, mailbox="carol@example.com", requested_by="UCAROL", source="slack")
    with pytest.raises(PolicyError, match="already has a request"):
        request_renewal(p, mailbox="carol@example.com", requested_by="UCAROL", source="slack")
    run_until_settled(p, [r["id"] for r in p.store.all("SELECT id FROM requests")], timeout=60)
    revoke_certificate(
        p,
        serial=current_certificate(p, "carol@example.com")["serial"],
        reason=RevocationReason.KEY_COMPROMISE,
        actor="cli:test",
    )
    # A revoked certificate is not renewed (a new request is); the superseded one is not current either.
    with pytest.raises(PolicyError, match="no current certificate"):
        request_renewal(p, mailbox="carol@example.com", requested_by="UCAROL", source="slack")
    assert p.store.one("SELECT status FROM certificates WHERE serial = ?", (cert["serial"],))["status"] == "superseded"
