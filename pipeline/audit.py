"""Append-only audit log chained with a MAC, with its head anchored outside the database.

Each entry's MAC covers its content and the previous entry's MAC, keyed with a
secret derived from the master key (``SecretBox.audit_keys``), so rewriting the
database alone cannot forge the chain. After each append the head (sequence and
MAC) is written to an anchor file and logged; ``verify`` compares the chain with
the anchor and so also catches deleted or truncated tail entries. Entries never
hold secrets: callers pass identifiers and plain facts only.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.clock import iso
from pipeline.ports import Clock
from pipeline.secretbox import SecretBox
from pipeline.store.db import Store

log = logging.getLogger("certportal.audit")
GENESIS = "0" * 64


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _mac(key: bytes, prev_mac: str, row: dict[str, Any]) -> str:
    body = json.dumps(
        [
            row["seq"],
            row["at"],
            row["actor"],
            row["action"],
            row["subject"],
            row["detail"],
            row["origin"],
            row["key_id"],
            prev_mac,
        ],
        separators=(",", ":"),
    ).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


class AuditLog:
    def __init__(self, store: Store, *, box: SecretBox, clock: Clock, anchor_path: Path) -> None:
        self.store = store
        self.box = box
        self.clock = clock
        self.anchor_path = anchor_path
        self._anchored = 0  # the highest sequence this process has anchored

    def record(self, *, actor: str, action: str, subject: str = "", origin: str = "", **detail: Any) -> int:
        """Append one entry in its own transaction and return its sequence number."""
        with self.store.write() as conn:
            seq = self.append(conn, actor=actor, action=action, subject=subject, origin=origin, **detail)
        self._anchor(seq)
        return seq

    def append(self, conn: Any, *, actor: str, action: str, subject: str = "", origin: str = "", **detail: Any) -> int:
        """Append inside the caller's write transaction (so the entry commits with the change it records).

        Call ``anchor_latest()`` after the transaction commits.
        """
        key_id = self.box.signing_audit_key_id
        key = self.box.audit_keys()[key_id]
        last = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last["seq"] + 1, last["mac"]) if last else (1, GENESIS)
        row = {
            "seq": seq,
            "at": iso(self.clock.now()),
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": json.dumps(detail, sort_keys=True, default=str),
            "origin": origin,
            "key_id": key_id,
        }
        row["mac"] = _mac(key, prev, row)
        conn.execute(
            "INSERT INTO audit (seq, at, actor, action, subject, detail, origin, key_id, mac) "
            "VALUES (:seq, :at, :actor, :action, :subject, :detail, :origin, :key_id, :mac)",
            row,
        )
        return seq

    def anchor_latest(self) -> None:
        """Move the anchor to the newest entry; skips the file when this process already anchored it."""
        last = self.store.one("SELECT seq FROM audit ORDER BY seq DESC LIMIT 1")
        if last and last["seq"] > self._anchored:
            self._anchor(last["seq"])

    def _anchor(self, seq: int) -> None:
        row = self.store.one("SELECT seq, mac FROM audit WHERE seq = ?", (seq,))
        if row is None:
            return
        self.anchor_path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes append: under a file lock, only move the anchor forward.
        fd = os.open(self.anchor_path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            text = fh.read().strip()
            try:
                current = int(json.loads(text)["length"]) if text else 0
            except (ValueError, KeyError, TypeError):
                # Never paper over a damaged anchor: `audit verify` and doctor report it.
                log.error("audit anchor %s is unreadable; not moving it", self.anchor_path.name)
                return
            self._anchored = max(self._anchored, min(seq, current))
            if seq > current:
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps({"length": row["seq"], "head": row["mac"]}) + "\n")
                # No fsync: a head lost in a power cut leaves the anchor behind the
                # database, which verify accepts; forcing it to disk would let it run
                # ahead of SQLite's own (WAL, synchronous=NORMAL) commits instead.
                fh.flush()
                self._anchored = seq
                log.info("audit head length=%d mac=%s", row["seq"], row["mac"])

    def entries(self, since: str | None = None) -> Iterator[dict[str, Any]]:
        sql, params = "SELECT * FROM audit ORDER BY seq", ()
        if since:
            sql, params = "SELECT * FROM audit WHERE at >= ? ORDER BY seq", (since,)  # type: ignore[assignment]
        for row in self.store.conn.execute(sql, params):
            entry = dict(row)
            entry["detail"] = json.loads(entry["detail"])
            yield entry

    def verify(self) -> VerifyReport:
        keys = self.box.audit_keys()
        problems: list[str] = []
        prev, expected_seq, count, head = GENESIS, 1, 0, GENESIS
        for row in self.store.conn.execute("SELECT * FROM audit ORDER BY seq"):
            r = dict(row)
            count += 1
            if r["seq"] != expected_seq:
                problems.append(f"entry {expected_seq} is missing (next is {r['seq']})")
            key = keys.get(r["key_id"])
            if key is None:
                problems.append(f"entry {r['seq']} is signed with a key not in the configured key set")
            elif not hmac.compare_digest(_mac(key, prev, r), r["mac"]):
                problems.append(f"entry {r['seq']} was altered, reordered or does not follow entry {r['seq'] - 1}")
            prev, head, expected_seq = r["mac"], r["mac"], r["seq"] + 1
        try:
            anchor = self._read_anchor()
        except ValueError:
            problems.append(f"the anchor file {self.anchor_path.name} is unreadable (edited or torn)")
            return VerifyReport(count, problems)
        if anchor is None:
            if count:
                problems.append(f"the anchor file {self.anchor_path.name} is missing")
        else:
            if count < anchor["length"]:
                problems.append(f"the log was truncated: the anchor records {anchor['length']} entries, found {count}")
            elif expected_seq - 1 == anchor["length"] and head != anchor["head"]:
                problems.append("the last entry differs from the anchored head")
            elif expected_seq - 1 > anchor["length"]:
                anchored = self.store.one("SELECT mac FROM audit WHERE seq = ?", (anchor["length"],))
                if anchored is None or anchored["mac"] != anchor["head"]:
                    problems.append(f"entry {anchor['length']} differs from the anchored head")
        return VerifyReport(count, problems)

    def _read_anchor(self) -> dict[str, Any] | None:
        """The anchor, or None when absent; raises ValueError when it is unreadable."""
        try:
            text = self.anchor_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        anchor = json.loads(text)
        if not isinstance(anchor, dict) or not isinstance(anchor.get("length"), int) or "head" not in anchor:
            raise ValueError("unexpected shape")
        return anchor
