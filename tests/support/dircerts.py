"""Small EC certificates for directory and vault tests: two CAs (ours and a foreign one) and leaves."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integrations.directory.certvalues import fingerprint

_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class TestCA:
    __test__ = False
    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    def issue(self, mailbox: str, *, days: int = 365, serial: int | None = None) -> bytes:
        """A DER S/MIME leaf for ``mailbox``."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mailbox)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(_NOW - dt.timedelta(days=1))
            .not_valid_after(_NOW + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mailbox)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(Encoding.DER)


def make_ca(name: str) -> TestCA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - dt.timedelta(days=1))
        .not_valid_after(_NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TestCA(name, key, certificate)


OUR_CA = make_ca("CertPortal Test CA")
FOREIGN_CA = make_ca("Some Other CA")


def smime_blob(*ders: bytes) -> bytes:
    """A certs-only PKCS#7 blob as a userSMIMECertificate value."""
    certificates = [x509.load_der_x509_certificate(d) for d in ders]
    return pkcs7.serialize_certificates(certificates, Encoding.DER)


def fp(der: bytes) -> str:
    return fingerprint(der)
