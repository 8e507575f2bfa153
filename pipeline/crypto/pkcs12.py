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


def profile_round_trips(profile: str, kdf_rounds: int) -> bool:
    """Build a PFX in ``profile`` with a throwaway key and certificate and check it opens intact.

    ``certportal doctor`` runs this once instead of reloading every PFX the
    worker builds (reloading re-validates RSA keys while holding the GIL).
    """
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pkcs12 self-check")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=5))
        .sign(key, hashes.SHA256())
    )
    password = "self-check"  # noqa: S105 - protects a throwaway key
    pfx = build_pfx(
        key=key,
        certificate=cert,
        chain=[],
        password=password,
        friendly_name="self-check",
        profile=profile,
        kdf_rounds=kdf_rounds,
    )
    opened = open_pfx(pfx, password)
    return (
        opened.cert is not None
        and opened.cert.certificate == cert
        and opened.key is not None
        and opened.key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    )
