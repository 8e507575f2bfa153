"""Helpers for the core tests: CLI environments and processes, readers for what the embedded CA and an
export leave behind, OpenSSL, and a small PKI that builds S/MIME certificates with one thing wrong."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bot.cli import cli as certportal_cli
from bot.wiring import build_pipeline
from pipeline.drive import run_until_settled
from pipeline.secretbox import new_key
from pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("password", "key", "csr", "order", "wait", "fetch", "verify", "bundle", "vault", "publish", "notify")
MAILBOX_STRICT = x509.ObjectIdentifier("2.23.140.1.5.1.3")


# -- environments and processes ------------------------------------------------
def core_env(data_dir: Path, *, master_keys: str | None = None, **settings: Any) -> dict[str, str]:
    """A CertPortal process environment on ``data_dir`` (like the ``base_env`` fixture, for any scope).

    ``settings`` are dotted names, e.g. ``**{"worker.lease_seconds": 2}``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTPORTAL", "SLACK_"))}
    env.update(
        {
            "CERTPORTAL_DATA_DIR": str(data_dir),
            "CERTPORTAL_MASTER_KEYS": master_keys if master_keys is not None else new_key(),
            "CERTPORTAL__CRYPTO__KEY_TYPE": "ec-p256",
            "CERTPORTAL__WORKER__IDLE_POLL_SECONDS": "0.05",
            "CERTPORTAL__WORKER__BACKOFF_BASE_SECONDS": "0.05",
            "CERTPORTAL__CA__POLL_INTERVAL_SECONDS": "0.05",
        }
    )
    for dotted, value in settings.items():
        env["CERTPORTAL__" + dotted.replace(".", "__").upper()] = str(value)
    return env


def cli(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``certportal ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_ok(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = cli(env, *args, timeout=timeout)
    if result.returncode != 0 or "error:" in result.stderr:
        raise AssertionError(f"certportal {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def popen_cli(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cli_in_process(env: Mapping[str, str], *args: str) -> Any:
    """Run a ``certportal`` command in this process (cheaper than a new interpreter); returns click's Result."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("CERTPORTAL", "SLACK_"))}
    clean.update({k: v for k, v in env.items() if k.startswith(("CERTPORTAL", "SLACK_"))})
    return CliRunner().invoke(certportal_cli, list(args), env=clean, catch_exceptions=False)


def settle(env: Mapping[str, str], *, timeout: float = 60) -> dict[str, str]:
    """Resume every unfinished request of the data dir in this process, as a restarted worker would."""
    p = build_pipeline(load_settings(None, env))
    try:
        ids = [r["id"] for r in p.store.all("SELECT id FROM requests")]
        return run_until_settled(p, ids, timeout=timeout) if ids else {}
    finally:
        p.store.close()


# -- reading the data dir ------------------------------------------------------
def query(path: Path, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, tuple(params))]
    finally:
        conn.close()


def ca_orders(data_dir: Path) -> list[dict[str, Any]]:
    """Every order the embedded CA accepted."""
    return query(data_dir / "ca" / "ca.db", "SELECT * FROM orders ORDER BY created_at")


def ca_crl(data_dir: Path) -> x509.CertificateRevocationList:
    rows = query(data_dir / "ca" / "ca.db", "SELECT der FROM crl WHERE id = 1")
    assert rows and rows[0]["der"], "the embedded CA has not published a CRL"
    return x509.load_der_x509_crl(rows[0]["der"])


def db_rows(data_dir: Path, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return query(data_dir / "certportal.db", sql, params)


@dataclass
class Export:
    pfx_path: Path
    password_path: Path

    @property
    def password(self) -> str:
        return self.password_path.read_text(encoding="utf-8").strip()

    def open(self) -> pkcs12.PKCS12KeyAndCertificates:
        return pkcs12.load_pkcs12(self.pfx_path.read_bytes(), self.password.encode())

    @property
    def serial(self) -> str:
        return self.pfx_path.stem.rsplit("-", 1)[1]


def exports_in(folder: Path) -> list[Export]:
    """The PFX/password pairs an export wrote (each .pfx must have its .txt)."""
    pairs = []
    for pfx in sorted(folder.glob("*.pfx")):
        txt = pfx.with_suffix(".txt")
        assert txt.exists(), f"{pfx.name} has no password file"
        pairs.append(Export(pfx, txt))
    return pairs


def spki(key_or_cert: Any) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: x509.Certificate, key: Any) -> bool:
    return spki(cert) == spki(key)


# -- OpenSSL ---------------------------------------------------------------------
def openssl(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``openssl``; passwords go through ``-passin file:`` / ``env:``, never argv."""
    return subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=60)


def private_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


# -- a PKI for certificates with one thing wrong ---------------------------------
@dataclass
class Pki:
    """Root -> issuing CA (P-384), issuing Mailbox-Strict leaves whose parts a test can change."""

    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    issuing: x509.Certificate

    @classmethod
    def create(cls, name: str = "Core Test") -> Pki:
        now = dt.datetime.now(dt.UTC)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root = _ca_cert(f"{name} Root", root_key, None, root_key, now, path_length=None)
        issuing_key = ec.generate_private_key(ec.SECP384R1())
        issuing = _ca_cert(f"{name} Issuing CA", issuing_key, root, root_key, now, path_length=0)
        return cls(root_key, root, issuing_key, issuing)

    @property
    def chain_pem(self) -> list[bytes]:
        return [pem(self.issuing), pem(self.root)]

    @property
    def anchors_pem(self) -> list[bytes]:
        return [pem(self.root)]

    def leaf(
        self,
        public_key: Any,
        mailbox: str,
        *,
        san: list[x509.GeneralName] | None = None,
        eku: list[x509.ObjectIdentifier] | None = None,
        key_usage: dict[str, bool] | None = None,
        policy: bool = True,
        not_before: dt.datetime | None = None,
        days: int = 365,
        signer: Any = None,
    ) -> x509.Certificate:
        """A compliant leaf unless told otherwise; ``eku=[]`` leaves the extension out."""
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        usage = {
            "digital_signature": True,
            "content_commitment": False,
            "key_encipherment": is_rsa,
            "data_encipherment": False,
            "key_agreement": not is_rsa,
            "key_cert_sign": False,
            "crl_sign": False,
            "encipher_only": False,
            "decipher_only": False,
        }
        usage.update(key_usage or {})
        start = (not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(microsecond=0)
        issuing_ski = self.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mailbox)]))
            .issuer_name(self.issuing.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days, seconds=-1))
            .add_extension(x509.KeyUsage(**usage), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(san if san is not None else [x509.RFC822Name(mailbox)]), critical=False
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuing_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://pki.example.com/core/crl")], None, None, None
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
                            x509.UniformResourceIdentifier("http://pki.example.com/core/issuer.crt"),
                        )
                    ]
                ),
                critical=False,
            )
        )
        eku = [ExtendedKeyUsageOID.EMAIL_PROTECTION] if eku is None else eku
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if policy:
            builder = builder.add_extension(
                x509.CertificatePolicies([x509.PolicyInformation(MAILBOX_STRICT, None)]), critical=False
            )
        return builder.sign(signer or self.issuing_key, hashes.SHA384())


def _ca_cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    *,
    path_length: int | None,
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CertPortal Core Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA384())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
