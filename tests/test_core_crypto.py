"""Pure crypto pieces: PFX passwords, subscriber keys, CSRs and PKCS#12 in both profiles."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from pipeline.crypto.csr import build_csr
from pipeline.crypto.keys import generate_key, key_from_der, key_to_der, key_type_of
from pipeline.crypto.passwords import generate_password
from pipeline.crypto.pkcs12 import build_pfx, open_pfx
from pipeline.errors import PolicyError
from pipeline.settings import DEFAULT_PASSWORD_ALPHABET, KEY_TYPES, CryptoSettings
from tests.support.core import Pki, key_matches, openssl, private_file

LOOK_ALIKES = "0Oo1lIi5S2Z8Buv|"


# -- passwords -------------------------------------------------------------------
def test_default_alphabet_has_no_look_alikes_and_needs_no_symbol_keyboard():
    assert not set(LOOK_ALIKES) & set(DEFAULT_PASSWORD_ALPHABET)
    assert DEFAULT_PASSWORD_ALPHABET.isalnum()
    assert DEFAULT_PASSWORD_ALPHABET.isascii()


def test_default_policy_gives_at_least_112_bits():
    c = CryptoSettings()
    assert c.password_length * math.log2(len(set(c.password_alphabet))) >= 112


def test_passwords_have_the_configured_length_and_alphabet():
    c = CryptoSettings()
    passwords = [generate_password(c.password_length, c.password_alphabet) for _ in range(300)]
    assert all(len(p) == c.password_length for p in passwords)
    assert all(set(p) <= set(c.password_alphabet) for p in passwords)
    assert len(set(passwords)) == len(passwords)
    assert generate_password(40, "abcdefghjk") and len(generate_password(40, "abcdefghjk")) == 40


def test_passwords_use_the_whole_alphabet_uniformly():
    c = CryptoSettings()
    counts = Counter("".join(generate_password(c.password_length, c.password_alphabet) for _ in range(400)))
    assert set(counts) == set(c.password_alphabet)
    expected = 400 * c.password_length / len(set(c.password_alphabet))  # about 213 per symbol
    assert all(0.6 * expected < n < 1.4 * expected for n in counts.values()), counts


def test_repeated_symbols_in_the_alphabet_do_not_bias_the_draw():
    counts = Counter(generate_password(4000, "a" * 30 + "bcdefghjkm"))
    # 10 distinct symbols: "a" must come up about a tenth of the time, not three quarters.
    assert 0.06 < counts["a"] / 4000 < 0.14


# -- keys ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        ("rsa-2048", rsa.RSAPrivateKey, 2048),
        ("rsa-3072", rsa.RSAPrivateKey, 3072),
        ("rsa-4096", rsa.RSAPrivateKey, 4096),
        ("ec-p256", ec.EllipticCurvePrivateKey, 256),
        ("ec-p384", ec.EllipticCurvePrivateKey, 384),
    ],
)
def test_every_key_type_generates_the_named_key(key_type, kind, size):
    key = generate_key(key_type)
    assert isinstance(key, kind)
    assert key.key_size == size
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.public_key().public_numbers().e == 65537
    assert key_type_of(key.public_key()) == key_type
    again = key_from_der(key_to_der(key))
    assert key_to_der(again) == key_to_der(key)


def test_key_types_in_settings_are_exactly_the_generated_ones():
    assert set(KEY_TYPES) == {"rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"}


@pytest.mark.parametrize("key_type", ["rsa-1024", "ec-p521", "ed25519", ""])
def test_unsupported_key_types_are_refused(key_type):
    with pytest.raises(PolicyError):
        generate_key(key_type)


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - refused on purpose
        ec.generate_private_key(ec.SECP521R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["rsa-1024", "p-521", "ed25519"],
)
def test_foreign_public_keys_are_not_a_supported_type(key):
    with pytest.raises(PolicyError):
        key_type_of(key.public_key())


# -- CSR -------------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ec-p384"])
def test_csr_names_the_mailbox_in_cn_and_san_and_is_signed_with_sha256(key_type):
    key = generate_key(key_type)
    csr = x509.load_pem_x509_csr(build_csr(key, "alice@example.com"))
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert [a.value for a in csr.subject] == ["alice@example.com"]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice@example.com"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.RFC822Name("alice@example.com")]
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_csr_hash_follows_the_setting():
    csr = x509.load_pem_x509_csr(build_csr(generate_key("ec-p384"), "bob@example.com", "sha384"))
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)


# -- PKCS#12 ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def issued():
    pki = Pki.create()
    key = generate_key("ec-p256")
    cert = pki.leaf(key.public_key(), "alice@example.com")
    return key, cert, [pki.issuing, pki.root]


PROFILES = {
    "compatible": ["MAC: sha1, Iteration 2048", "pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048"],
    "modern": ["MAC: sha256, Iteration 2048", "PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"],
}


@pytest.mark.parametrize("profile", ["compatible", "modern"])
def test_pfx_profiles_use_the_promised_algorithms(tmp_path, issued, profile):
    key, cert, chain = issued
    password = generate_password(24, DEFAULT_PASSWORD_ALPHABET)
    pfx = build_pfx(
        key=key, certificate=cert, chain=chain, password=password, friendly_name="alice S/MIME", profile=profile
    )
    pfx_path = private_file(tmp_path / "alice.pfx", pfx)
    pass_path = private_file(tmp_path / "alice.txt", password.encode() + b"\n")
    info = openssl("pkcs12", "-info", "-noout", "-in", pfx_path, "-passin", f"file:{pass_path}")
    assert info.returncode == 0, info.stderr
    text = (info.stdout + info.stderr).decode()
    for expected in PROFILES[profile]:
        assert expected in text
    other = "modern" if profile == "compatible" else "compatible"
    assert PROFILES[other][1] not in text
    assert text.count("Certificate bag") == 3


def test_kdf_rounds_follow_the_setting(tmp_path, issued):
    key, cert, chain = issued
    pfx = build_pfx(key=key, certificate=cert, chain=chain, password="pw", friendly_name="x", kdf_rounds=5000)
    info = openssl(
        "pkcs12", "-info", "-noout", "-in", private_file(tmp_path / "x.pfx", pfx),
        "-passin", f"file:{private_file(tmp_path / 'x.txt', b'pw')}",
    )  # fmt: skip
    assert b"pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 5000" in info.stdout + info.stderr


@pytest.mark.parametrize("profile", ["compatible", "modern"])
def test_pfx_carries_key_certificate_chain_and_friendly_name(tmp_path, issued, profile):
    key, cert, chain = issued
    pfx = build_pfx(
        key=key, certificate=cert, chain=chain, password="s3cret-pw", friendly_name="Alice S/MIME", profile=profile
    )
    p12 = open_pfx(pfx, "s3cret-pw")
    assert p12.cert is not None and p12.cert.certificate == cert
    assert p12.cert.friendly_name == b"Alice S/MIME"
    assert p12.key is not None and key_matches(cert, p12.key)
    assert [c.certificate for c in p12.additional_certs] == chain
    # OpenSSL shows the same friendly name on the certificate bag.
    shown = openssl(
        "pkcs12", "-in", private_file(tmp_path / "a.pfx", pfx), "-nokeys", "-clcerts",
        "-passin", f"file:{private_file(tmp_path / 'a.txt', b's3cret-pw')}",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert b"friendlyName: Alice S/MIME" in shown.stdout


def test_pfx_refuses_a_wrong_password(issued):
    key, cert, chain = issued
    pfx = build_pfx(key=key, certificate=cert, chain=chain, password="right", friendly_name="x")
    with pytest.raises(ValueError):
        open_pfx(pfx, "wrong")
