"""A test root and issuing CA that turn CSRs into Mailbox-Strict S/MIME certificates.

The vendor fakes issue real certificates with it, so the pipeline's verify step
(chain to trust anchors, pkilint, sign/encrypt self-test) runs against what they
return. Profile: S/MIME BR Mailbox-validated Strict (policy 2.23.140.1.5.1.3),
emailProtection only, KU per key type, SAN rfc822Name, subject CN = mailbox,
keyid-only AKI, SKI, http:// CRL and caIssuers URLs, 128-bit random serials. CA
keys are EC P-384 signed with SHA-384.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAILBOX_STRICT_POLICY = x509.ObjectIdentifier("2.23.140.1.5.1.3")
PKI_URL = "http://pki.example.com/certportal-test"


def _serial() -> int:
    # 128 random bits, top bit forced so the DER integer stays 17 bytes and positive.
    return secrets.randbits(127) | (1 << 127)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CertPortal Test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(public_key: object) -> x509.KeyUsage:
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=not is_rsa,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class TestCA:
    """Root -> issuing CA -> leaf. Create once per test session (key generation is the cost)."""

    __test__ = False  # not a pytest test class

    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    issuing: x509.Certificate

    @classmethod
    def create(cls, *, now: dt.datetime | None = None) -> TestCA:
        now = now or dt.datetime.now(dt.UTC)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(_name("CertPortal Test Root"))
            .issuer_name(_name("CertPortal Test Root"))
            .public_key(root_key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(root_key, hashes.SHA384())
        )
        issuing_key = ec.generate_private_key(ec.SECP384R1())
        issuing = (
            x509.CertificateBuilder()
            .subject_name(_name("CertPortal Test S/MIME Issuing CA"))
            .issuer_name(root.subject)
            .public_key(issuing_key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
            .sign(root_key, hashes.SHA384())
        )
        return cls(root_key=root_key, root=root, issuing_key=issuing_key, issuing=issuing)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def issuing_pem(self) -> bytes:
        return self.issuing.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, csr_pem: bytes, mailbox: str, *, days: int = 365, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """Sign the CSR's public key for ``mailbox``; like the commercial CAs, ignore the CSR's subject."""
        csr = x509.load_pem_x509_csr(csr_pem)
        public_key = csr.public_key()
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        issuing_ski = self.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mailbox)]))
            .issuer_name(self.issuing.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(_serial())
            .not_valid_before(now - dt.timedelta(minutes=5))
            # notAfter is inclusive, so one second less keeps the validity at exactly ``days``.
            .not_valid_after(now - dt.timedelta(minutes=5) + dt.timedelta(days=days, seconds=-1))
            .add_extension(_leaf_key_usage(public_key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mailbox)]), critical=False)
            .add_extension(
                x509.CertificatePolicies([x509.PolicyInformation(MAILBOX_STRICT_POLICY, None)]), critical=False
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuing_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(f"{PKI_URL}/issuing.crl")],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(f"{PKI_URL}/issuing.cer"),
                        )
                    ]
                ),
                critical=False,
            )
            .sign(self.issuing_key, hashes.SHA384())
        )

    def issue_pem(self, csr_pem: bytes, mailbox: str, *, days: int = 365) -> bytes:
        return self.issue(csr_pem, mailbox, days=days).public_bytes(serialization.Encoding.PEM)
