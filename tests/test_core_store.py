"""The SQLite store: private file, WAL, migrations that apply once, append-only audit table."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from pipeline.store.db import Store, migrate, migration_scripts


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data" / "certportal.db").open()
    yield s
    s.close()


def test_database_file_is_private_even_with_a_permissive_umask(tmp_path):
    old_umask = os.umask(0)
    try:
        s = Store(tmp_path / "data" / "certportal.db").open()
        s.conn.execute("INSERT INTO leases (name, owner, expires_at) VALUES ('x', 'y', 'z')")
        s.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "data" / "certportal.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) & 0o077 == 0


def test_database_runs_in_wal_mode_with_a_busy_timeout(store):
    raw = sqlite3.connect(store.path)  # WAL is a property of the file, seen by any reader
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert store.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_migrations_apply_once_and_keep_data(tmp_path):
    path = tmp_path / "certportal.db"
    first = Store(path).open()
    names = [name for name, _ in migration_scripts()]
    assert names and names == sorted(names)
    recorded = [r["name"] for r in first.all("SELECT name FROM schema_migrations ORDER BY name")]
    assert recorded == names
    first.conn.execute("INSERT INTO leases (name, owner, expires_at) VALUES ('keep', 'me', 'never')")
    assert migrate(first.conn) == []
    first.close()
    again = Store(path).open()  # a restart applies nothing twice and loses nothing
    assert [r["name"] for r in again.all("SELECT name FROM schema_migrations ORDER BY name")] == names
    assert again.one("SELECT owner FROM leases WHERE name = 'keep'") == {"owner": "me"}
    again.close()


def test_a_migration_that_fails_leaves_nothing_half_applied(tmp_path, monkeypatch):
    import pipeline.store.db as db

    scripts = migration_scripts()
    broken = ("9999_broken.sql", "CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;\n")
    monkeypatch.setattr(db, "migration_scripts", lambda: [*scripts, broken])
    s = Store(tmp_path / "certportal.db")
    with pytest.raises(sqlite3.OperationalError):
        s.open()
    assert s.one("SELECT name FROM sqlite_master WHERE name = 'half'") is None
    assert s.one("SELECT name FROM schema_migrations WHERE name = '9999_broken.sql'") is None
    assert s.one("SELECT count(*) AS n FROM schema_migrations")["n"] == len(scripts)
    s.close()


def test_core_tables_exist(store):
    tables = {r["name"] for r in store.all("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"requests", "jobs", "work", "certificates", "reminders", "links", "audit"} <= tables


def test_audit_rows_cannot_be_updated_or_deleted(store):
    store.conn.execute("INSERT INTO audit (seq, at, actor, action, key_id, mac) VALUES (1, 'now', 'me', 'x', 'k', 'm')")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("UPDATE audit SET actor = 'someone else'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("DELETE FROM audit")
    assert store.one("SELECT actor FROM audit") == {"actor": "me"}


def test_one_open_request_per_mailbox(store):
    def insert(request_id: str, state: str) -> None:
        store.conn.execute(
            "INSERT INTO requests (id, mailbox, requested_by, key_type, state, created_at, updated_at) "
            "VALUES (?, 'alice@example.com', 'cli:t', 'ec-p256', ?, 'now', 'now')",
            (request_id, state),
        )

    insert("r1", "issued")
    insert("r2", "approved")
    with pytest.raises(sqlite3.IntegrityError):
        insert("r3", "pending_approval")
    insert("r4", "failed")


def test_write_rolls_back_on_error(store):
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute("INSERT INTO leases (name, owner, expires_at) VALUES ('gone', 'me', 'never')")
        raise RuntimeError("boom")
    assert store.one("SELECT * FROM leases WHERE name = 'gone'") is None
