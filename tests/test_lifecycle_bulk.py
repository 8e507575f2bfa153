"""Bulk rollout through the real command line: a dry run changes nothing; a killed commit resumes without duplicates."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import ROOT

MAILBOXES = [f"user{i}@example.com" for i in range(8)]


@pytest.fixture
def certportal(base_env):
    """``certportal(*args)`` in this process (a fresh process per call costs seconds); stdout/stderr kept apart."""
    runner = CliRunner()

    def run(*args, env=None, check=False):
        result = runner.invoke(cli, list(args), env={**base_env, **(env or {})})
        if check:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def count(db: Path, sql: str) -> int:
    """Read-only, so polling never creates the database before the command does."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:  # not created yet
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    finally:
        conn.close()


def per_mailbox(db: Path, table: str) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute(f"SELECT mailbox, count(*) FROM {table} GROUP BY mailbox").fetchall()  # noqa: S608
    finally:
        conn.close()
    return dict(rows)


def write_csv(path: Path, rows: list[str], header: str = "mailbox,key") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_dry_run_prints_the_plan_and_changes_nothing(certportal, tmp_path, base_env):
    certportal("issue", "user0@example.com", check=True)
    data = Path(base_env["CERTPORTAL_DATA_DIR"])
    csv = write_csv(
        tmp_path / "people.csv",
        [
            "user0@example.com,",
            "User1@Example.com,rsa-2048",
            "user2@example.com",
            "x@evil.example,",
            "user2@example.com",
        ],
    )
    before = (dump(data / "certportal.db"), dump(data / "ca" / "ca.db"))
    result = certportal("bulk", str(csv))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "would issue user1@example.com (key rsa-2048)" in out
    assert "would issue user2@example.com (key ec-p256)" in out
    assert "skip user0@example.com: already issued" in out
    assert "x@evil.example" in out and "outside the allowed domains" in out
    assert "dry run: 2 to issue, 1 already issued" in out
    assert (dump(data / "certportal.db"), dump(data / "ca" / "ca.db")) == before


def test_a_file_without_a_mailbox_column_is_refused(certportal, tmp_path):
    csv = write_csv(tmp_path / "people.csv", ["user0@example.com"], header="email")
    result = certportal("bulk", str(csv), "--commit")
    assert result.exit_code != 0
    assert "'mailbox' column" in str(result.exception)


def test_commit_is_resumable_after_a_kill_and_orders_once_per_mailbox(certportal, tmp_path, base_env):
    data = Path(base_env["CERTPORTAL_DATA_DIR"])
    db = data / "certportal.db"
    csv = write_csv(tmp_path / "people.csv", [f"{m}," for m in MAILBOXES])
    env = {
        **base_env,
        # Orders take a moment at the CA, so the kill lands with orders placed but not collected.
        "CERTPORTAL__CA__LOCAL__ISSUE_DELAY_SECONDS": "0.3",
        # A killed worker's job leases run out quickly, so the re-run picks them up without a long wait.
        "CERTPORTAL__WORKER__LEASE_SECONDS": "3",
        "CERTPORTAL__WORKER__HEARTBEAT_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "bulk", str(csv), "--commit", "--rate", "300/min"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and count(db, "SELECT count(*) FROM certificates") < 2:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    issued_before = count(db, "SELECT count(*) FROM certificates")
    assert 2 <= issued_before < len(MAILBOXES), "the kill should land mid-way"

    resumed = certportal("bulk", str(csv), "--commit", "--rate", "6000/min", env=env)
    assert resumed.exit_code == 0, resumed.output
    assert f"issued {len(MAILBOXES) - issued_before}, already issued {issued_before}," in resumed.stdout

    one_each = dict.fromkeys(MAILBOXES, 1)
    assert per_mailbox(db, "certificates") == one_each
    assert per_mailbox(db, "requests") == one_each
    assert per_mailbox(data / "ca" / "ca.db", "orders") == one_each  # never a second order at the CA

    again = certportal("bulk", str(csv), "--commit", env=env)
    assert again.exit_code == 0, again.output
    assert f"issued 0, already issued {len(MAILBOXES)}, failed or unfinished 0" in again.stdout


def test_commit_lists_failures_and_exits_non_zero(certportal, tmp_path):
    csv = write_csv(tmp_path / "people.csv", ["user0@example.com,", "x@evil.example,", "user1@example.com,dsa"])
    result = certportal("bulk", str(csv), "--commit", "--rate", "600/min")
    assert result.exit_code == 1
    assert "issued 1, already issued 0, failed or unfinished 2" in result.stdout
    assert "FAILED x@evil.example: " in result.stdout
    assert "FAILED user1@example.com: unknown key type 'dsa'" in result.stdout
    assert "status=active" in certportal("list", check=True).stdout
