"""Certificate signing requests for a mailbox: CN and SAN rfc822Name are the mailbox."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pipeline.crypto.keys import PrivateKey

HASHES: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def build_csr(key: PrivateKey, mailbox: str, signature_hash: str = "sha256") -> bytes:
    """A PEM CSR for ``mailbox``. Most CAs take only its public key; ours reads the SAN too."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mailbox)]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mailbox)]), critical=False)
        .sign(key, HASHES[signature_hash])
    )
    return csr.public_bytes(serialization.Encoding.PEM)
