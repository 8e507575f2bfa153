"""The secret scan: after issuing, renewing, exporting, revoking and rotating keys, no password, private
key or PFX is anywhere but the encrypted stores (the embedded CA's and the local vault's).

Scanned: the raw bytes of every file in the data dir outside ``ca/`` and ``vault/`` (the
database, its WAL, the audit anchor), every row of every table of the database, the audit
log as JSON lines, and everything the commands printed with ``-v``. A connection held open
for the whole run keeps the WAL file from being checkpointed away, so it holds every page
version written meanwhile.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.secretbox import new_key
from tests.support.core import Export, cli_ok, core_env, exports_in

MAILBOXES = {"alice@example.com": "rsa-2048", "bob@example.com": "ec-p384", "carol@example.com": "ec-p256"}


def needles_of(export: Export) -> dict[str, bytes]:
    """Every form in which a leak of this export's secrets could show up."""
    pfx = export.pfx_path.read_bytes()
    middle = len(pfx) // 2
    key = export.open().key
    found = {
        "password": export.password.encode(),
        "PFX": pfx,
        "PFX (a slice of its encrypted body)": pfx[middle : middle + 48],
        "PFX (base64)": base64.b64encode(pfx)[120:184],
        "PFX (hex)": pfx[middle : middle + 48].hex().encode(),
        "key (PKCS#8 DER)": key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "key (traditional DER)": key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    }
    if isinstance(key, ec.EllipticCurvePrivateKey):
        scalar = key.private_numbers().private_value.to_bytes((key.curve.key_size + 7) // 8, "big")
        found["key (EC private scalar)"] = scalar
        found["key (EC private scalar, hex)"] = scalar.hex().encode()
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        numbers = key.private_numbers()
        found["key (RSA private exponent)"] = numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big")
        found["key (RSA prime p)"] = numbers.p.to_bytes((numbers.p.bit_length() + 7) // 8, "big")
    return {f"{name} of {export.serial}": value for name, value in found.items()}


def leaks(haystacks: dict[str, bytes], needles: dict[str, bytes]) -> list[str]:
    out = [f"{what} in {where}" for where, data in haystacks.items() for what, n in needles.items() if n in data]
    out += [f"a PEM private key in {where}" for where, data in haystacks.items() if b"PRIVATE KEY" in data]
    return out


def dump_tables(db: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(db)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dumps = {}
        for name in names:
            cells = [
                v if isinstance(v, bytes) else str(v).encode()
                for row in conn.execute(f'SELECT * FROM "{name}"')  # noqa: S608 - names from sqlite_master
                for v in row
            ]
            dumps[f"table {name}"] = b"\x00".join(cells)
        return dumps
    finally:
        conn.close()


@pytest.fixture(scope="module")
def busy_day(tmp_path_factory):
    """Run a day of operations through the command line; return what to scan and the secrets to look for."""
    base = tmp_path_factory.mktemp("secretscan")
    data_dir, out = base / "data", base / "exports"
    old_key = new_key()
    env = core_env(data_dir, master_keys=old_key)
    printed: dict[str, bytes] = {}

    def run(*args: str, keys: str | None = None) -> str:
        run_env = env if keys is None else {**env, "CERTPORTAL_MASTER_KEYS": keys}
        result = cli_ok(run_env, "-v", *args)
        printed[f"output of certportal {' '.join(args)} #{len(printed)}"] = (result.stdout + result.stderr).encode()
        return result.stdout

    run("list")  # creates the database
    holder = sqlite3.connect(data_dir / "certportal.db")
    try:
        holder.execute("SELECT count(*) FROM requests").fetchone()
        for mailbox, key_type in MAILBOXES.items():
            run("issue", mailbox, "--key", key_type)
        run("issue", "alice@example.com", "--key", "rsa-2048")  # a renewal: the first one is superseded
        run("export", "alice@example.com", "--out", str(out / "before-rotation"), "--reason", "new laptop", "--all")
        run("revoke", "carol@example.com", "--reason", "keyCompromise")
        new = run("keys", "new").strip()
        both = f"{new},{old_key}"
        run("keys", "rotate", keys=both)
        for mailbox in MAILBOXES:
            run("export", mailbox, "--out", str(out / mailbox), "--reason", "secret scan", "--all", keys=new)
        run("show", "alice@example.com", "--pem", "--chain", keys=new)
        run("list", keys=both)
        run("doctor", keys=both)
        run("audit", "verify", keys=both)
        audit = run("audit", "list", "--json", keys=both).encode()
        files = {
            f"file {p.relative_to(data_dir)}": p.read_bytes()
            for p in sorted(data_dir.rglob("*"))
            if p.is_file() and p.relative_to(data_dir).parts[0] not in ("ca", "vault")
        }
    finally:
        holder.close()
    haystacks = {**files, **dump_tables(data_dir / "certportal.db"), "audit list --json": audit, **printed}
    exports = [e for folder in sorted(out.iterdir()) for e in exports_in(folder)]
    return haystacks, exports, out


def test_no_password_private_key_or_pfx_outside_the_encrypted_stores(busy_day):
    haystacks, exports, _ = busy_day
    assert "file certportal.db" in haystacks
    assert len(haystacks.get("file certportal.db-wal", b"")) > 0, "the WAL must be part of the scan"
    assert {"table work", "table audit", "table certificates", "table jobs", "table requests"} <= set(haystacks)
    # The scan sees real content (with a reader holding the WAL open, most of it is still in the WAL).
    assert b"BEGIN CERTIFICATE" in haystacks["file certportal.db"] + haystacks["file certportal.db-wal"]
    assert b"BEGIN CERTIFICATE" in haystacks["table certificates"]
    assert b"certificate.exported" in haystacks["audit list --json"]

    serials = {e.serial for e in exports}
    assert len(serials) == 4  # alice twice, bob, carol
    needles = {name: value for e in exports for name, value in needles_of(e).items()}
    found = leaks(haystacks, needles)
    assert found == [], "\n".join(found)


def test_the_scan_finds_secrets_where_they_are(busy_day):
    """The control: the same scan run over the export folder finds every password and PFX in it."""
    _, exports, out = busy_day
    exported = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for export in exports:
        needles = needles_of(export)
        found = leaks(exported, {k: v for k, v in needles.items() if k.startswith(("password", "PFX of"))})
        assert len(found) >= 2, found
