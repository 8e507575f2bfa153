"""SQLite connections and migrations.

One database file in WAL mode with a busy timeout; connections run in autocommit
and write transactions are explicit (``BEGIN IMMEDIATE``) and short, so a claim
takes the write lock up front instead of failing half-way. Each thread gets its
own connection. ``secure_delete`` overwrites freed pages, and the file is created
with mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import sqlite_utils

BUSY_TIMEOUT_MS = 10_000
_WRITER_LOCKS: dict[Path, threading.Lock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writer_lock(path: Path) -> threading.Lock:
    """One lock per database file in this process, however many Store objects open it."""
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(path.resolve(), threading.Lock())


class ThreadConnections:
    """One connection per thread to a database file only its owner can read.

    The file is created with mode 0600 (in a 0700 folder) before SQLite first
    opens it, and ``schema`` (idempotent DDL) is applied on each new connection.
    """

    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = Path(path)
        self.schema = schema
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = connect(self.path)
            if self.schema:
                conn.executescript(self.schema)
            self._local.conn = conn
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over this thread's connection, for queries that return rows as dicts."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(self.conn)
            self._local.db = db
        return db

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.db = None


class Store(ThreadConnections):
    """The service database: migrations, short write transactions, dict rows."""

    def __init__(self, path: Path, schema: str = "") -> None:
        super().__init__(path, schema)
        self._writer = _writer_lock(self.path)

    def open(self) -> Store:
        """Create the file (mode 0600) if needed and apply pending migrations."""
        migrate(self.conn)
        return self

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that takes the lock at BEGIN.

        Threads of one process queue on a Python lock first: SQLite's busy
        handler would otherwise sleep them in 1-10 ms steps. Other processes
        still meet ``busy_timeout``.
        """
        conn = self.conn
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        return next(iter(self.db.query(sql, params)), None)

    def all(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def migration_scripts() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped, in name order."""
    folder = resources.files("pipeline.store") / "migrations"
    scripts = [(p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(scripts)


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction; return their names.

    Applied names are recorded (not just a maximum), so migrations added by
    different features apply wherever they sort.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied: list[str] = []
    for name, sql in migration_scripts():
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                (name,),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
