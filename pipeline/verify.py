"""Checks on what a CA returned, before anyone gets it.

Key match, SAN, EKU, key usage for the key type, sane validity, a chain to the
configured trust anchors, S/MIME BR lint (ERROR fails; WARNING is reported to
admins and the certificate is delivered) and a sign/encrypt self-test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pipeline.crypto.keys import PrivateKey, public_der
from pipeline.crypto.smime import self_test
from pipeline.lint import Finding, lint_certificate

MAX_VALIDITY = timedelta(days=825)
CLOCK_SKEW = timedelta(minutes=10)


class VerificationFailed(Exception):
    """The issued certificate must not be delivered; ``args[0]`` says why (for admins)."""


@dataclass(frozen=True)
class Verified:
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    certificate_type: str
    warnings: list[Finding]


def verify_issued(
    *,
    certificate_pem: bytes,
    chain_pem: list[bytes],
    key: PrivateKey,
    mailbox: str,
    anchors_pem: list[bytes],
    now: datetime,
    waivers: frozenset[str] = frozenset(),
) -> Verified:
    """Raise VerificationFailed with a reason, or return what passed (with lint warnings)."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
        chain = [x509.load_pem_x509_certificate(p) for p in chain_pem]
        anchors = [c for pem in anchors_pem for c in x509.load_pem_x509_certificates(pem)]
    except ValueError as exc:
        raise VerificationFailed(f"unparseable certificate from the CA: {exc}") from None

    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != public_der(key):
        raise VerificationFailed("the certificate's public key is not the key we generated")
    _check_san(cert, mailbox)
    _check_usage(cert, key)
    _check_validity(cert, now)
    _check_chain(cert, chain, anchors, now)
    result = lint_certificate(cert.public_bytes(serialization.Encoding.DER))
    errors = result.errors(waivers)
    if errors:
        raise VerificationFailed("S/MIME BR lint errors: " + "; ".join(map(str, errors)))
    try:
        self_test(cert, key)
    except Exception as exc:  # any failure of the round trip means the pair is unusable
        raise VerificationFailed(f"S/MIME self-test failed: {type(exc).__name__}") from None
    warnings = [f for f in result.at_or_above({"WARNING"}) if f.code not in waivers]
    return Verified(cert, chain, result.certificate_type, warnings)


def _check_san(cert: x509.Certificate, mailbox: str) -> None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise VerificationFailed("the certificate has no subjectAltName") from None
    names = [n.lower() for n in san.get_values_for_type(x509.RFC822Name)]
    if mailbox.lower() not in names:
        raise VerificationFailed(
            f"the certificate's SAN does not hold {mailbox} (it holds {', '.join(names) or 'none'})"
        )


def _check_usage(cert: x509.Certificate, key: PrivateKey) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise VerificationFailed(f"the certificate lacks {exc.oid._name}") from None
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
        raise VerificationFailed("the certificate's EKU lacks emailProtection")
    if not ku.digital_signature:
        raise VerificationFailed("the certificate's key usage lacks digitalSignature")
    if isinstance(key, rsa.RSAPrivateKey) and not ku.key_encipherment:
        raise VerificationFailed("the RSA certificate lacks keyEncipherment (Outlook could not encrypt to it)")
    if isinstance(key, ec.EllipticCurvePrivateKey) and ku.key_encipherment:
        raise VerificationFailed("the EC certificate carries keyEncipherment, which EC keys cannot do")


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if start > now + CLOCK_SKEW:
        raise VerificationFailed(f"the certificate is not valid until {start.isoformat()}")
    if end <= now:
        raise VerificationFailed("the certificate has already expired")
    if end - start > MAX_VALIDITY:
        raise VerificationFailed(f"the certificate is valid for {(end - start).days} days, above the BR's 825")


def _check_chain(
    cert: x509.Certificate, chain: list[x509.Certificate], anchors: list[x509.Certificate], now: datetime
) -> None:
    if not anchors:
        raise VerificationFailed("no trust anchors are configured ([ca] trust_anchors)")
    current = cert
    pool = list(chain)
    for _ in range(len(pool) + 1):
        for anchor in anchors:
            if _issued_by(current, anchor):
                return
            if current == anchor:
                return
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None:
            break
        if not parent.not_valid_before_utc <= now <= parent.not_valid_after_utc:
            raise VerificationFailed(f"the chain certificate {parent.subject.rfc4514_string()} is not valid now")
        pool.remove(parent)
        current = parent
    raise VerificationFailed("the certificate does not chain to a configured trust anchor")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature and friends
        return False
    return True
