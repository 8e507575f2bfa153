"""S/MIME self-test: prove a fresh certificate and key sign (every key type) and encrypt/decrypt (RSA).

cryptography's PKCS#7 envelope supports RSA recipients only, and Outlook encrypts
only to certificates with keyEncipherment, so EC certificates are tested for
signing.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from pipeline.crypto.keys import PrivateKey

MESSAGE = b"CertPortal S/MIME self-test"


def self_test(certificate: x509.Certificate, key: PrivateKey) -> None:
    """Raise ValueError if the pair cannot sign or (for RSA) round-trip an encrypted message."""
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(MESSAGE)
        .add_signer(certificate, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
    )
    if not signed:
        raise ValueError("signing produced no message")
    if isinstance(key, rsa.RSAPrivateKey):
        enveloped = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(MESSAGE)
            .set_content_encryption_algorithm(algorithms.AES256)
            .add_recipient(certificate)
            .encrypt(serialization.Encoding.DER, [])
        )
        if pkcs7.pkcs7_decrypt_der(enveloped, certificate, key, []) != MESSAGE:
            raise ValueError("decrypted message differs from the original")
