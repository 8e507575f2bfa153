"""Vault backend ``local``: PFX and password encrypted under the master key set in ``<data dir>/vault/``.

The reference returned by ``store`` is the certificate's serial; storing the same
serial again returns the existing entry, so a resumed job never duplicates it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.clock import iso
from pipeline.errors import NotFound, PermanentFailure
from pipeline.ports import Clock, VaultEntry, VaultSecret
from pipeline.secretbox import SecretBox
from pipeline.settings import Settings
from pipeline.store.db import ThreadConnections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    serial TEXT PRIMARY KEY, mailbox TEXT NOT NULL, not_before TEXT NOT NULL, not_after TEXT NOT NULL,
    pfx_enc BLOB NOT NULL, password_enc BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retrievals (serial TEXT NOT NULL, at TEXT NOT NULL, reason TEXT NOT NULL);
"""


class LocalVault:
    name = "local"

    def __init__(self, folder: Path, *, box: SecretBox, clock: Clock) -> None:
        self.folder = folder
        self.box = box
        self.clock = clock
        self._db = ThreadConnections(folder / "vault.db", _SCHEMA)

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def check(self) -> list[str]:
        try:
            self.conn.execute("SELECT count(*) FROM secrets").fetchone()
        except sqlite3.Error as exc:
            return [f"local vault: cannot open {self.folder}/vault.db: {exc}"]
        return []

    def store(self, *, entry: VaultEntry) -> str:
        existing = self.conn.execute("SELECT mailbox FROM secrets WHERE serial = ?", (entry.serial,)).fetchone()
        if existing is not None:
            if existing["mailbox"] != entry.mailbox:
                raise PermanentFailure(
                    "The key store refused the certificate.",
                    admin_detail=f"local vault already holds serial {entry.serial} for another mailbox",
                )
            return entry.serial
        self.conn.execute(
            "INSERT INTO secrets (serial, mailbox, not_before, not_after, pfx_enc, password_enc, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING",
            (
                entry.serial,
                entry.mailbox,
                iso(entry.not_before),
                iso(entry.not_after),
                self.box.encrypt(entry.pfx),
                self.box.encrypt(entry.password.encode()),
                iso(self.clock.now()),
            ),
        )
        return entry.serial

    def retrieve(self, *, ref: str, reason: str) -> VaultSecret:
        row = self.conn.execute("SELECT pfx_enc, password_enc FROM secrets WHERE serial = ?", (ref,)).fetchone()
        if row is None:
            raise NotFound(f"the local vault holds nothing for {ref}")
        self.conn.execute(
            "INSERT INTO retrievals (serial, at, reason) VALUES (?, ?, ?)", (ref, iso(self.clock.now()), reason)
        )
        return VaultSecret(
            pfx=self.box.decrypt(row["pfx_enc"]), password=self.box.decrypt(row["password_enc"]).decode()
        )

    def rotate_keys(self, box: SecretBox) -> int:
        """Re-encrypt every entry under ``box``'s first key; returns how many."""
        rows = self.conn.execute("SELECT serial, pfx_enc, password_enc FROM secrets").fetchall()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for r in rows:
                self.conn.execute(
                    "UPDATE secrets SET pfx_enc = ?, password_enc = ? WHERE serial = ?",
                    (box.rotate(r["pfx_enc"]), box.rotate(r["password_enc"]), r["serial"]),
                )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return len(rows)


def from_settings(settings: Settings, *, clock: Clock, box: SecretBox) -> LocalVault:
    return LocalVault(settings.data_dir / "vault", box=box, clock=clock)
