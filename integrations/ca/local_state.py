"""The embedded CA's own storage: keys (encrypted), orders, revocations and the current CRL.

Kept in its own SQLite file under ``<data dir>/ca/`` because the CA is a separate
system from the pipeline that orders from it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from integrations.ca import local_profile as profile
from pipeline.clock import iso
from pipeline.ports import Clock
from pipeline.secretbox import SecretBox
from pipeline.store.db import ThreadConnections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ca_keys (name TEXT PRIMARY KEY, cert_pem TEXT NOT NULL, key_enc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, mailbox TEXT NOT NULL, csr_pem TEXT NOT NULL,
    status TEXT NOT NULL, ready_at TEXT NOT NULL, cert_pem TEXT, serial TEXT, detail TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (serial TEXT PRIMARY KEY, revoked_at TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS crl (id INTEGER PRIMARY KEY CHECK (id = 1), number INTEGER NOT NULL, der BLOB);
"""


class CAState:
    def __init__(self, folder: Path, *, box: SecretBox, clock: Clock, organization: str) -> None:
        self.folder = folder
        self.box = box
        self.clock = clock
        self.organization = organization
        self._db = ThreadConnections(folder / "ca.db", _SCHEMA)
        self._lock = threading.Lock()
        self._chain: tuple[x509.Certificate, x509.Certificate] | None = None
        self._issuing_key: ec.EllipticCurvePrivateKey | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row else None

    # -- keys ---------------------------------------------------------------
    def ensure(self) -> None:
        """Create the root and issuing CA on first use (once, even with several processes)."""
        if self._chain is not None:
            return
        with self._lock:
            if self._chain is not None:
                return
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not conn.execute("SELECT 1 FROM ca_keys WHERE name = 'issuing'").fetchone():
                    self._create(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            rows = {r["name"]: r for r in conn.execute("SELECT * FROM ca_keys")}
            key = serialization.load_der_private_key(self.box.decrypt(rows["issuing"]["key_enc"]), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._issuing_key = key
            self._chain = (
                x509.load_pem_x509_certificate(rows["issuing"]["cert_pem"].encode()),
                x509.load_pem_x509_certificate(rows["root"]["cert_pem"].encode()),
            )

    def _create(self, conn: sqlite3.Connection) -> None:
        now = self.clock.now().replace(microsecond=0)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = profile.ca_name(self.organization, f"{self.organization} Root")
        root = profile.ca_certificate(
            subject=root_name,
            key=root_key,
            issuer=root_name,
            issuer_key=root_key,
            not_before=now,
            days=365 * 20,
            path_length=None,
            pki_url=None,
        )
        issuing_key = ec.generate_private_key(ec.SECP384R1())
        issuing = profile.ca_certificate(
            subject=profile.ca_name(self.organization, f"{self.organization} S/MIME Issuing CA"),
            key=issuing_key,
            issuer=root_name,
            issuer_key=root_key,
            not_before=now,
            days=365 * 8,
            path_length=0,
            pki_url="",
        )
        for name, cert, key in (("root", root, root_key), ("issuing", issuing, issuing_key)):
            der = key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            conn.execute(
                "INSERT INTO ca_keys (name, cert_pem, key_enc) VALUES (?, ?, ?)",
                (name, cert.public_bytes(serialization.Encoding.PEM).decode(), self.box.encrypt(der)),
            )

    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        self.ensure()
        assert self._chain is not None
        return self._chain

    def issuing(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        self.ensure()
        assert self._chain is not None and self._issuing_key is not None
        return self._chain[0], self._issuing_key

    def rotate_keys(self, box: SecretBox) -> int:
        """Re-encrypt the CA keys under ``box``'s first key; returns how many."""
        rows = self.conn.execute("SELECT name, key_enc FROM ca_keys").fetchall()
        for row in rows:
            self.conn.execute(
                "UPDATE ca_keys SET key_enc = ? WHERE name = ?", (box.rotate(row["key_enc"]), row["name"])
            )
        return len(rows)

    # -- orders -------------------------------------------------------------
    def create_order(
        self, *, order_id: str, idempotency_key: str, mailbox: str, csr_pem: str, ready_at: str
    ) -> dict[str, Any]:
        self.conn.execute(
            "INSERT INTO orders (id, idempotency_key, mailbox, csr_pem, status, ready_at, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (order_id, idempotency_key, mailbox, csr_pem, ready_at, iso(self.clock.now())),
        )
        row = self.order_by_key(idempotency_key)
        assert row is not None
        return row

    def order(self, order_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM orders WHERE id = ?", (order_id,))

    def order_by_key(self, key: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM orders WHERE idempotency_key = ?", (key,))

    def order_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM orders").fetchone()[0])

    def mark_issued(self, order_id: str, *, cert_pem: str, serial: str, detail: str) -> None:
        # Only a pending order becomes issued: two pollers racing sign twice at
        # worst, but only the first certificate is ever recorded or handed out.
        self.conn.execute(
            "UPDATE orders SET status = 'issued', cert_pem = ?, serial = ?, detail = ? "
            "WHERE id = ? AND status = 'pending'",
            (cert_pem, serial, detail, order_id),
        )

    def reject(self, order_id: str, detail: str) -> None:
        self.conn.execute(
            "UPDATE orders SET status = 'rejected', detail = ? WHERE id = ? AND status = 'pending'", (detail, order_id)
        )

    def cancel(self, order_id: str) -> None:
        self.conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = ? AND status = 'pending'", (order_id,))

    # -- revocation ---------------------------------------------------------
    def revoke(self, serial: str, reason: str) -> None:
        self.conn.execute(
            "INSERT INTO revocations (serial, revoked_at, reason) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING",
            (serial, iso(self.clock.now().replace(microsecond=0)), reason),
        )

    def revocations(self) -> list[tuple[str, str, str]]:
        return [(r["serial"], r["revoked_at"], r["reason"]) for r in self.conn.execute("SELECT * FROM revocations")]

    def next_crl_number(self) -> int:
        conn = self.conn
        conn.execute("INSERT INTO crl (id, number) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
        return int(conn.execute("UPDATE crl SET number = number + 1 WHERE id = 1 RETURNING number").fetchone()[0])

    def load_crl(self) -> x509.CertificateRevocationList | None:
        row = self._one("SELECT der FROM crl WHERE id = 1")
        return x509.load_der_x509_crl(row["der"]) if row and row["der"] else None

    def save_crl(self, crl: x509.CertificateRevocationList) -> None:
        self.conn.execute("UPDATE crl SET der = ? WHERE id = 1", (crl.public_bytes(serialization.Encoding.DER),))
