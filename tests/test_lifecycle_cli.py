"""Lifecycle commands as an operator runs them: renew, export of history, the CRL, admin views, the worker's scheduler."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from bot.cli import cli
from pipeline.lifecycle.views import parse_window, week_start
from tests.conftest import ROOT


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


def serial_of(issued_line: str) -> str:
    # "issued MAILBOX serial SERIAL expires DATE"
    return issued_line.split()[3]


def test_renew_runs_to_the_end_and_both_certificates_stay_exportable(certportal, tmp_path):
    first = serial_of(certportal("issue", "alice@example.com", check=True).stdout)
    renewed = certportal("renew", "alice@example.com", check=True)
    assert renewed.stdout.startswith("issued alice@example.com serial ")
    second = serial_of(renewed.stdout)
    assert second != first
    listing = certportal("list", check=True).stdout
    assert f"serial={first} status=superseded" in listing
    assert f"serial={second} status=active" in listing

    out = tmp_path / "export"
    certportal("export", "alice@example.com", "--all", "--out", str(out), "--reason", "new laptop", check=True)
    assert sorted(p.name for p in out.glob("*.pfx")) == sorted(f"alice@example.com-{s}.pfx" for s in (first, second))

    refused = certportal("renew", "nobody@example.com")
    assert refused.exit_code != 0
    assert "no current certificate" in str(refused.exception)


def test_renew_from_the_cli_is_approved_by_the_admin_even_when_policy_asks_for_an_approver(certportal):
    env = {"CERTPORTAL__POLICY__AUTO_APPROVE_RENEWALS": "false"}
    certportal("issue", "bob@example.com", env=env, check=True)
    renewed = certportal("renew", "bob@example.com", env=env)
    assert renewed.exit_code == 0, renewed.output
    assert "status=superseded" in certportal("list", check=True).stdout


def test_ca_crl_prints_the_signed_crl_listing_revoked_serials(certportal):
    serial = serial_of(certportal("issue", "carol@example.com", check=True).stdout)
    chain = x509.load_pem_x509_certificates(
        certportal("show", "carol@example.com", "--pem", "--chain", check=True).stdout.encode()
    )
    issuing = chain[1]
    crl = x509.load_pem_x509_crl(certportal("ca", "crl", "--pem", check=True).stdout.encode())
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is None

    certportal("revoke", "carol@example.com", "--reason", "keyCompromise", check=True)
    crl = x509.load_pem_x509_crl(certportal("ca", "crl", "--pem", check=True).stdout.encode())
    assert crl.is_signature_valid(issuing.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc > datetime.now(UTC)


def test_list_expiring_within_and_stats(certportal):
    short = {"CERTPORTAL__CA__LOCAL__VALIDITY_DAYS": "20"}
    certportal("issue", "dora@example.com", env=short, check=True)
    certportal("issue", "ed@example.com", check=True)
    certportal("renew", "ed@example.com", check=True)

    soon = certportal("list", "--expiring-within", "30d", check=True).stdout.splitlines()
    assert len(soon) == 1 and soon[0].startswith("certificate dora@example.com ")
    later = certportal("list", "--expiring-within", "400d", check=True).stdout
    assert "dora@example.com" in later and "ed@example.com" in later
    assert "status=superseded" not in later  # only current certificates are "expiring"
    assert certportal("list", "--expiring-within", "2w", check=True).stdout == ""
    bad = certportal("list", "--expiring-within", "soon")
    assert bad.exit_code != 0 and "not a duration" in str(bad.exception)

    stats = certportal("stats", check=True).stdout
    assert "certificates (3): active 2, superseded 1" in stats
    assert "requests (3): issued 3" in stats
    expiry_week = week_start((datetime.now(UTC) + timedelta(days=20)).date())
    weeks = [line.strip() for line in stats.splitlines() if line.strip().startswith("week of")]
    assert len(weeks) == 8
    assert f"week of {expiry_week.isoformat()}: 1" in weeks
    assert sum(int(line.rsplit(" ", 1)[1]) for line in weeks) == 1


@pytest.mark.parametrize(
    ("text", "days"),
    [("30d", 30), ("30", 30), ("2w", 14), ("48h", 2), (" 7D ", 7)],
)
def test_parse_window(text, days):
    assert parse_window(text) == timedelta(days=days)


def test_the_worker_runs_the_scheduler_and_gives_its_lease_back_on_sigterm(base_env):
    db = Path(base_env["CERTPORTAL_DATA_DIR"]) / "certportal.db"
    env = {**base_env, "CERTPORTAL__SCHEDULER__INTERVAL_SECONDS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _lease_held(db):
            time.sleep(0.05)
        assert _lease_held(db), "the worker's scheduler never took its lease"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert not _lease_held(db)
    assert b"scheduler every 1s" in proc.stderr.read()


def _lease_held(db: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return False
    try:
        return conn.execute("SELECT count(*) FROM leases WHERE name = 'scheduler'").fetchone()[0] == 1
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
