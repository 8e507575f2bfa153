"""PKCS#12 (PFX) bundles in two profiles.

``compatible`` (the default) is PBES1 SHA1+3DES with a SHA-1 MAC, because Windows
before 10 1709, many macOS/iOS builds and older Android reject AES PFX files.
``modern`` is PBES2 AES-256-CBC with a SHA-256 MAC.

KDF rounds: the password is >= 112 random bits, so stretching it adds nothing an
attacker would notice, while every round is CPU time spent holding the GIL in
the worker. 2048 rounds equals the MAC iteration count every reader accepts;
the count is a setting for sites that must match a policy.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from pipeline.crypto.keys import PrivateKey


def build_pfx(
    *,
    key: PrivateKey,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    password: str,
    friendly_name: str,
    profile: str = "compatible",
    kdf_rounds: int = 2048,
) -> bytes:
    mac: hashes.HashAlgorithm
    if profile == "modern":
        algorithm, mac = pkcs12.PBES.PBESv2SHA256AndAES256CBC, hashes.SHA256()
    else:
        algorithm, mac = pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC, hashes.SHA1()  # noqa: S303 - compatibility profile
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(algorithm)
        .hmac_hash(mac)
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(friendly_name.encode(), key, certificate, chain, encryption)


def open_pfx(pfx: bytes, password: str) -> pkcs12.PKCS12KeyAndCertificates:
    return pkcs12.load_pkcs12(pfx, password.encode())
