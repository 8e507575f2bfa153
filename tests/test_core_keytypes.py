"""Every key type end to end through the command line, then checked with outside tools.

``certportal issue`` / ``show --pem`` / ``export`` on one data dir, then pkilint's own
command (``lint_cabf_smime_cert``) and OpenSSL's (``pkcs12``, ``smime`` sign/verify, and
encrypt/decrypt for RSA) on the results. Passwords reach OpenSSL only via ``-passin file:``.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.settings import KEY_TYPES
from tests.support.core import Export, cli_ok, core_env, exports_in, key_matches, openssl, private_file, query

RSA_TYPES = [k for k in KEY_TYPES if k.startswith("rsa")]
MESSAGE = b"Quarterly numbers attached.\r\nRegards, the team\r\n"


@dataclass
class Issued:
    key_type: str
    mailbox: str
    issue_output: str
    pem: str
    export: Export
    chain_file: Path


def issue_and_export(base: Path, key_type: str) -> Issued:
    """Each key type on its own data dir, so the types can run side by side."""
    env = core_env(base / "data")
    mailbox = f"{key_type}@example.com"
    out = cli_ok(env, "issue", mailbox, "--key", key_type).stdout
    shown = cli_ok(env, "show", mailbox, "--pem").stdout
    cli_ok(env, "export", mailbox, "--out", str(base / "export"), "--reason", "interop test")
    (export,) = exports_in(base / "export")
    # The trust anchors come from the CA's own store, not from what the pipeline hands out.
    ca_certs = {r["name"]: r["cert_pem"] for r in query(base / "data" / "ca" / "ca.db", "SELECT * FROM ca_keys")}
    chain_file = base / "chain.pem"
    chain_file.write_text(ca_certs["issuing"] + ca_certs["root"], encoding="utf-8")
    return Issued(key_type, mailbox, out, shown, export, chain_file)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> dict[str, Issued]:
    bases = {key_type: tmp_path_factory.mktemp(key_type) for key_type in KEY_TYPES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(issue_and_export, base, k) for k, base in bases.items()}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_issue_prints_serial_and_expiry(fleet, key_type):
    item = fleet[key_type]
    cert = x509.load_pem_x509_certificate(item.pem.encode())
    match = re.fullmatch(r"issued (\S+) serial ([0-9a-f]+) expires (\d{4}-\d{2}-\d{2})\n", item.issue_output)
    assert match, item.issue_output
    assert match[1] == item.mailbox
    assert int(match[2], 16) == cert.serial_number
    assert match[3] == cert.not_valid_after_utc.date().isoformat()
    assert (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days in (364, 365)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_shown_certificate_has_the_key_type_and_passes_pkilint_mailbox_strict(fleet, key_type, tmp_path):
    item = fleet[key_type]
    assert item.pem.count("BEGIN CERTIFICATE") == 1
    cert = x509.load_pem_x509_certificate(item.pem.encode())
    key = cert.public_key()
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    if key_type.startswith("rsa"):
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == int(key_type[4:])
        assert usage.digital_signature and usage.key_encipherment and not usage.key_agreement
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == f"secp{key_type[4:]}r1"
        assert usage.digital_signature and usage.key_agreement and not usage.key_encipherment
    path = tmp_path / "leaf.pem"
    path.write_text(item.pem, encoding="utf-8")
    linter = Path(sys.executable).with_name("lint_cabf_smime_cert")
    result = subprocess.run(
        [str(linter), "lint", "-t", "MAILBOX-STRICT", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_export_opens_with_its_password_and_holds_the_shown_certificate(fleet, key_type):
    item = fleet[key_type]
    p12 = item.export.open()
    shown = x509.load_pem_x509_certificate(item.pem.encode())
    assert p12.cert is not None and p12.cert.certificate == shown
    assert p12.key is not None and key_matches(shown, p12.key)
    assert p12.cert.friendly_name == f"{item.mailbox} S/MIME".encode()
    assert format(shown.serial_number, "x") == item.export.serial


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_reads_the_exported_pfx(fleet, key_type):
    item = fleet[key_type]
    passin = f"file:{item.export.password_path}"
    info = openssl("pkcs12", "-info", "-noout", "-in", item.export.pfx_path, "-passin", passin)
    assert info.returncode == 0, info.stderr
    text = (info.stdout + info.stderr).decode()
    assert "MAC: sha1" in text and "pbeWithSHA1And3-KeyTripleDES-CBC" in text  # the compatible default
    certs = openssl("pkcs12", "-in", item.export.pfx_path, "-nokeys", "-clcerts", "-passin", passin)
    assert certs.returncode == 0, certs.stderr
    assert f"friendlyName: {item.mailbox} S/MIME".encode() in certs.stdout
    assert x509.load_pem_x509_certificate(certs.stdout) == x509.load_pem_x509_certificate(item.pem.encode())


def test_openssl_refuses_the_pfx_with_a_wrong_password(fleet, tmp_path):
    item = fleet["ec-p256"]
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    result = openssl("pkcs12", "-info", "-noout", "-in", item.export.pfx_path, "-passin", f"file:{wrong}")
    assert result.returncode != 0


def encrypted_key_and_cert(item: Issued, tmp_path: Path) -> tuple[Path, Path]:
    """The exported key re-encrypted under its own password (never in clear on disk) and the leaf."""
    # OpenSSL reads -passin and -passout naming one file as two lines of it, so the output side gets a copy.
    passout = private_file(tmp_path / "passout.txt", item.export.password_path.read_bytes())
    key = tmp_path / "key.pem"
    result = openssl(
        "pkcs12", "-in", item.export.pfx_path, "-nocerts", "-out", key,
        "-passin", f"file:{item.export.password_path}", "-passout", f"file:{passout}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    cert = tmp_path / "cert.pem"
    cert.write_text(item.pem, encoding="utf-8")
    return key, cert


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_smime_signs_with_the_exported_key_and_verifies_against_the_chain(fleet, key_type, tmp_path):
    item = fleet[key_type]
    chain_file = item.chain_file
    key, cert = encrypted_key_and_cert(item, tmp_path)
    message = tmp_path / "message.txt"
    message.write_bytes(MESSAGE)
    signed = tmp_path / "signed.eml"
    sign = openssl(
        "smime", "-sign", "-in", message, "-signer", cert, "-inkey", key,
        "-passin", f"file:{item.export.password_path}", "-out", signed,
    )  # fmt: skip
    assert sign.returncode == 0, sign.stderr
    verify = openssl("smime", "-verify", "-in", signed, "-CAfile", chain_file, "-out", tmp_path / "out.txt")
    assert verify.returncode == 0, verify.stderr
    assert b"Verification successful" in verify.stderr
    assert (tmp_path / "out.txt").read_bytes().replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    # The control: a message altered in transit does not verify.
    tampered = tmp_path / "tampered.eml"
    tampered.write_bytes(signed.read_bytes().replace(b"Quarterly", b"Quarterlx"))
    assert openssl("smime", "-verify", "-in", tampered, "-CAfile", chain_file, "-out", tmp_path / "x").returncode != 0


@pytest.mark.parametrize("key_type", RSA_TYPES)
def test_openssl_smime_encrypts_to_the_certificate_and_decrypts_with_the_exported_key(fleet, key_type, tmp_path):
    item = fleet[key_type]
    key, cert = encrypted_key_and_cert(item, tmp_path)
    message = tmp_path / "message.txt"
    message.write_bytes(MESSAGE)
    sealed = tmp_path / "sealed.eml"
    encrypt = openssl("smime", "-encrypt", "-aes256", "-in", message, "-out", sealed, cert)
    assert encrypt.returncode == 0, encrypt.stderr
    assert b"Quarterly" not in sealed.read_bytes()
    opened = tmp_path / "opened.txt"
    decrypt = openssl(
        "smime", "-decrypt", "-in", sealed, "-recip", cert, "-inkey", key,
        "-passin", f"file:{item.export.password_path}", "-out", opened,
    )  # fmt: skip
    assert decrypt.returncode == 0, decrypt.stderr
    assert opened.read_bytes() == MESSAGE
