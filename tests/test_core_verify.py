"""The pkilint wrapper and ``verify``: what a CA returned is checked before anyone gets it."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from pipeline.crypto.keys import generate_key
from pipeline.lint import lint_certificate
from pipeline.verify import VerificationFailed, verify_issued
from tests.support.core import Pki, pem

MAILBOX = "alice@example.com"


@pytest.fixture(scope="module")
def pki():
    return Pki.create()


@pytest.fixture(scope="module")
def rsa_key():
    return generate_key("rsa-2048")


@pytest.fixture(scope="module")
def ec_key():
    return generate_key("ec-p256")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def codes(cert: x509.Certificate) -> set[str]:
    return {f.code for f in lint_certificate(der(cert)).findings}


# -- lint ------------------------------------------------------------------------
@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_a_compliant_certificate_lints_clean_as_mailbox_strict(pki, request, key_name):
    key = request.getfixturevalue(key_name)
    result = lint_certificate(der(pki.leaf(key.public_key(), MAILBOX)))
    assert result.certificate_type == "MAILBOX-STRICT"
    assert result.blocking() == []
    assert result.errors() == []


def test_a_certificate_without_an_smime_policy_is_one_error(pki, ec_key):
    result = lint_certificate(der(pki.leaf(ec_key.public_key(), MAILBOX, policy=False)))
    assert result.certificate_type == ""
    assert [(f.severity, f.code) for f in result.findings] == [("ERROR", "certportal.no_smime_policy_oid")]


def test_lint_reports_br_violations_by_code(pki, rsa_key, ec_key):
    too_long = pki.leaf(rsa_key.public_key(), MAILBOX, days=900)
    assert "cabf.smime.certificate_validity_period_exceeds_825_days" in codes(too_long)
    server_auth = pki.leaf(
        rsa_key.public_key(), MAILBOX, eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert "cabf.smime.prohibited_eku_present" in codes(server_auth)
    ec_encipher = pki.leaf(ec_key.public_key(), MAILBOX, key_usage={"key_encipherment": True})
    assert codes(ec_encipher) & {"pkix.key_usage_value_prohibited_for_ec", "cabf.smime.prohibited_ku_present"}
    assert lint_certificate(der(ec_encipher)).errors()


def test_waivers_remove_only_the_named_codes(pki, rsa_key):
    result = lint_certificate(der(pki.leaf(rsa_key.public_key(), MAILBOX, days=900)))
    blocking = {f.code for f in result.blocking()}
    assert "cabf.smime.certificate_validity_period_exceeds_825_days" in blocking
    waived = {f.code for f in result.blocking(frozenset({"cabf.smime.certificate_validity_period_exceeds_825_days"}))}
    assert waived == blocking - {"cabf.smime.certificate_validity_period_exceeds_825_days"}


def test_warnings_block_issuance_but_info_does_not(pki, rsa_key):
    result = lint_certificate(der(pki.leaf(rsa_key.public_key(), MAILBOX)))
    assert any(f.severity == "INFO" for f in result.findings)  # e.g. the SKI method note
    assert result.blocking() == []
    eight_twenty_five = lint_certificate(der(pki.leaf(rsa_key.public_key(), MAILBOX, days=825)))
    assert [f.severity for f in eight_twenty_five.blocking()] == ["WARNING"]


# -- verify ----------------------------------------------------------------------
def check(pki, cert, key, *, mailbox=MAILBOX, chain=None, anchors=None, now=None):
    return verify_issued(
        certificate_pem=pem(cert),
        chain_pem=pki.chain_pem if chain is None else chain,
        key=key,
        mailbox=mailbox,
        anchors_pem=pki.anchors_pem if anchors is None else anchors,
        now=now or dt.datetime.now(dt.UTC),
    )


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_a_good_certificate_passes(pki, request, key_name):
    key = request.getfixturevalue(key_name)
    cert = pki.leaf(key.public_key(), MAILBOX)
    verified = check(pki, cert, key)
    assert verified.certificate == cert
    assert verified.certificate_type == "MAILBOX-STRICT"
    assert verified.chain == [pki.issuing, pki.root]
    assert verified.warnings == []


def test_the_mailbox_is_matched_without_regard_to_case(pki, ec_key):
    check(pki, pki.leaf(ec_key.public_key(), "Alice@Example.com"), ec_key, mailbox=MAILBOX)


def rejected(pki, cert, key, match, **kwargs):
    with pytest.raises(VerificationFailed, match=match):
        check(pki, cert, key, **kwargs)


def test_a_certificate_for_another_key_is_rejected(pki, ec_key):
    other = generate_key("ec-p256")
    rejected(pki, pki.leaf(other.public_key(), MAILBOX), ec_key, "not the key we generated")


def test_a_certificate_for_another_mailbox_is_rejected(pki, ec_key):
    rejected(pki, pki.leaf(ec_key.public_key(), "bob@example.com"), ec_key, "SAN does not hold alice@example.com")
    no_email = pki.leaf(ec_key.public_key(), MAILBOX, san=[x509.DNSName("example.com")])
    rejected(pki, no_email, ec_key, "SAN does not hold")


def test_missing_or_wrong_eku_is_rejected(pki, rsa_key):
    rejected(pki, pki.leaf(rsa_key.public_key(), MAILBOX, eku=[]), rsa_key, "lacks extendedKeyUsage")
    client_only = pki.leaf(rsa_key.public_key(), MAILBOX, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    rejected(pki, client_only, rsa_key, "EKU lacks emailProtection")


def test_ec_with_key_encipherment_is_rejected(pki, ec_key):
    cert = pki.leaf(ec_key.public_key(), MAILBOX, key_usage={"key_encipherment": True})
    rejected(pki, cert, ec_key, "EC certificate carries keyEncipherment")


def test_rsa_without_key_encipherment_or_any_cert_without_digital_signature_is_rejected(pki, rsa_key):
    cert = pki.leaf(rsa_key.public_key(), MAILBOX, key_usage={"key_encipherment": False})
    rejected(pki, cert, rsa_key, "lacks keyEncipherment")
    cert = pki.leaf(rsa_key.public_key(), MAILBOX, key_usage={"digital_signature": False})
    rejected(pki, cert, rsa_key, "lacks digitalSignature")


def test_an_expired_certificate_is_rejected(pki, ec_key):
    cert = pki.leaf(ec_key.public_key(), MAILBOX, days=30)
    rejected(pki, cert, ec_key, "expired", now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))


def test_a_not_yet_valid_certificate_is_rejected(pki, ec_key):
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    rejected(pki, pki.leaf(ec_key.public_key(), MAILBOX, not_before=tomorrow), ec_key, "not valid until")


def test_validity_beyond_the_br_maximum_is_rejected(pki, ec_key):
    rejected(pki, pki.leaf(ec_key.public_key(), MAILBOX, days=900), ec_key, "above the BR's 825")


def test_no_chain_to_the_anchors_is_rejected(pki, ec_key):
    cert = pki.leaf(ec_key.public_key(), MAILBOX)
    stranger = Pki.create("Stranger")
    rejected(pki, cert, ec_key, "does not chain", anchors=stranger.anchors_pem)
    rejected(pki, cert, ec_key, "does not chain", chain=[])  # the issuing CA is missing
    rejected(pki, cert, ec_key, "no trust anchors", anchors=[])


def test_a_leaf_signed_by_an_impostor_with_the_right_issuer_name_is_rejected(pki, ec_key):
    impostor = ec.generate_private_key(ec.SECP384R1())
    forged = pki.leaf(ec_key.public_key(), MAILBOX, signer=impostor)
    assert forged.issuer == pki.issuing.subject
    rejected(pki, forged, ec_key, "does not chain")


def test_lint_errors_are_rejected(pki, ec_key):
    rejected(pki, pki.leaf(ec_key.public_key(), MAILBOX, policy=False), ec_key, "S/MIME BR lint errors")


def test_lint_warnings_pass_and_are_reported(pki, ec_key):
    verified = check(pki, pki.leaf(ec_key.public_key(), MAILBOX, days=825), ec_key)
    assert [f.severity for f in verified.warnings] == ["WARNING"]
