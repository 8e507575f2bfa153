"""The admin command line on a temporary data dir, as an operator uses it.

The command under test runs as ``certportal`` in a fresh process (the ``run_cli`` fixture);
setup and read-backs run the same commands in this process to save interpreter start-ups.
Tests check what an operator would see: output, exit codes, files and their modes, the
CA's CRL, the audit log.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from itertools import pairwise
from pathlib import Path

import pytest
from cryptography import x509

from pipeline.settings import DEFAULT_PASSWORD_ALPHABET
from tests.support.core import ca_crl, ca_orders, cli_in_process, db_rows, exports_in, key_matches, query

ALICE = "alice@example.com"


@pytest.fixture
def data_dir(base_env) -> Path:
    return Path(base_env["CERTPORTAL_DATA_DIR"])


@pytest.fixture
def issue(base_env):
    """``issue(mailbox)`` -> serial: setup through the same command, run in this process to save start-up time."""

    def run(mailbox: str = ALICE, *args: str, env: dict[str, str] | None = None) -> str:
        result = cli_in_process({**base_env, **(env or {})}, "issue", mailbox, *args)
        assert result.exit_code == 0, result.output
        match = re.fullmatch(rf"issued {re.escape(mailbox)} serial ([0-9a-f]+) expires \S+\n", result.stdout)
        assert match, result.output
        return match[1]

    return run


@pytest.fixture
def audit_entries(base_env):
    def read(env: dict[str, str] | None = None) -> list[dict]:
        result = cli_in_process({**base_env, **(env or {})}, "audit", "list", "--json")
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    return read


def shown_certificate(env: dict[str, str], mailbox: str = ALICE) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cli_in_process(env, "show", mailbox, "--pem").stdout.encode())


def listing(env: dict[str, str]) -> str:
    return cli_in_process(env, "list").stdout


# -- files on disk ----------------------------------------------------------------
def test_every_file_in_the_data_dir_is_private_even_mid_write_and_with_umask_0(run_cli, data_dir):
    # Killed after the vault step: SQLite's -wal and -shm files are left behind too.
    crash = {"CERTPORTAL_MASTER_KEYS": "", "CERTPORTAL_CRASH_AT": "after:vault"}
    old_umask = os.umask(0)
    try:
        result = run_cli("issue", ALICE, env=crash)
    finally:
        os.umask(old_umask)
    assert result.returncode == -9
    paths = sorted(data_dir.rglob("*"))
    names = {str(p.relative_to(data_dir)) for p in paths}
    assert {"master.keys", "certportal.db", "certportal.db-wal", "audit.anchor", "ca/ca.db", "vault/vault.db"} <= names
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [data_dir, *paths]}
    assert [f"{p} {mode:o}" for p, mode in modes.items() if mode & 0o077] == []


def test_show_chain_prints_the_leaf_then_each_issuer_up_to_the_root(run_cli, issue):
    issue()
    certs = x509.load_pem_x509_certificates(run_cli("show", ALICE, "--pem", "--chain", check=True).stdout.encode())
    assert len(certs) == 3
    assert certs[0].subject.rfc4514_string() == f"CN={ALICE}"
    for child, parent in pairwise(certs):
        child.verify_directly_issued_by(parent)
    certs[2].verify_directly_issued_by(certs[2])  # the root signs itself


# -- export ----------------------------------------------------------------------
@pytest.mark.parametrize("reason", [None, "   "])
def test_export_refuses_without_a_reason_and_writes_nothing(run_cli, issue, tmp_path, reason, audit_entries):
    issue()
    out = tmp_path / "out"
    args = ["export", ALICE, "--out", str(out)] + ([] if reason is None else ["--reason", reason])
    result = run_cli(*args)
    assert result.returncode != 0
    assert "--reason is required" in result.stderr
    assert not out.exists() or not any(out.iterdir())
    assert not [e for e in audit_entries() if e["action"] == "certificate.exported"]


def test_export_writes_one_private_pfx_and_password_pair_and_audits_it(
    run_cli, issue, tmp_path, audit_entries, base_env
):
    serial = issue()
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{ALICE}-{serial}.pfx"
    stale.write_bytes(b"an older, world-readable file")
    stale.chmod(0o644)
    old_umask = os.umask(0)  # the modes must not depend on the operator's umask
    try:
        result = run_cli("export", ALICE, "--out", str(out), "--reason", "new laptop", check=True)
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in out.iterdir()) == [f"{ALICE}-{serial}.pfx", f"{ALICE}-{serial}.txt"]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert f"wrote {ALICE}-{serial}.pfx and {ALICE}-{serial}.txt" in result.stdout
    (export,) = exports_in(out)
    assert len(export.password) == 24 and set(export.password) <= set(DEFAULT_PASSWORD_ALPHABET)
    p12 = export.open()
    shown = shown_certificate(base_env)
    assert p12.cert.certificate == shown
    assert key_matches(shown, p12.key)
    exported = [e for e in audit_entries() if e["action"] == "certificate.exported"]
    assert len(exported) == 1
    assert exported[0]["subject"] == ALICE
    assert exported[0]["detail"] == {"serial": serial, "reason": "new laptop"}
    assert exported[0]["actor"].startswith("cli:")
    assert export.password not in json.dumps(exported)


def test_export_by_serial_and_all_after_a_second_issue(run_cli, issue, tmp_path, audit_entries):
    first = issue()
    second = issue()
    assert first != second
    listed = run_cli("list", check=True).stdout
    assert f"serial={first} status=superseded" in listed
    assert f"serial={second} status=active" in listed

    old = tmp_path / "old"
    run_cli("export", ALICE, "--out", str(old), "--reason", "read 2024 mail", "--serial", first.upper(), check=True)
    (only,) = exports_in(old)
    assert only.serial == first
    assert format(only.open().cert.certificate.serial_number, "x") == first

    everything = tmp_path / "all"
    run_cli("export", ALICE, "--out", str(everything), "--reason", "archive", "--all", check=True)
    pairs = exports_in(everything)
    assert sorted(p.serial for p in pairs) == sorted([first, second])
    assert len(list(everything.iterdir())) == 4
    opened = [p.open() for p in pairs]
    for pair, p12 in zip(pairs, opened, strict=True):
        assert format(p12.cert.certificate.serial_number, "x") == pair.serial
        assert key_matches(p12.cert.certificate, p12.key)
    assert not key_matches(opened[0].cert.certificate, opened[1].key)  # a new key for each certificate
    serials = [e["detail"]["serial"] for e in audit_entries() if e["action"] == "certificate.exported"]
    assert sorted(serials) == sorted([first, first, second])


def test_export_refuses_another_mailboxs_serial(run_cli, issue, tmp_path):
    issue()
    bobs = issue("bob@example.com")
    out = tmp_path / "out"
    result = run_cli("export", ALICE, "--out", str(out), "--reason", "x", "--serial", bobs)
    assert result.returncode != 0
    assert "no such certificate" in result.stderr
    assert not out.exists() or not any(out.iterdir())


# -- revoke ----------------------------------------------------------------------
def crl_entry(data_dir: Path, serial: str) -> x509.RevokedCertificate | None:
    return ca_crl(data_dir).get_revoked_certificate_by_serial_number(int(serial, 16))


def reason_of(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def test_revoke_puts_the_serial_on_the_crl_with_its_reason(run_cli, issue, data_dir, audit_entries, base_env):
    alice, bob = issue(), issue("bob@example.com")
    result = run_cli("revoke", ALICE, "--reason", "keyCompromise", check=True)
    assert f"revoked {ALICE} serial {alice} (keyCompromise)" in result.stdout
    entry = crl_entry(data_dir, alice)
    assert entry is not None and reason_of(entry) == x509.ReasonFlags.key_compromise
    assert crl_entry(data_dir, bob) is None

    run_cli("revoke", "bob@example.com", "--reason", "unspecified", check=True)
    entry = crl_entry(data_dir, bob)
    assert entry is not None
    assert reason_of(entry) is None  # BR 7.2.2: unspecified omits the reasonCode

    issuing = x509.load_pem_x509_certificate(
        query(data_dir / "ca" / "ca.db", "SELECT cert_pem FROM ca_keys WHERE name = 'issuing'")[0]["cert_pem"].encode()
    )
    assert ca_crl(data_dir).is_signature_valid(issuing.public_key())
    assert f"serial={alice} status=revoked" in listing(base_env)
    revoked = [e for e in audit_entries() if e["action"] == "certificate.revoked"]
    assert [(e["detail"]["serial"], e["detail"]["reason"]) for e in revoked] == [
        (alice, "keyCompromise"),
        (bob, "unspecified"),
    ]
    again = run_cli("revoke", ALICE, "--reason", "keyCompromise")
    assert again.returncode != 0
    assert "no certificate to revoke" in again.stderr


def test_revoke_all_covers_superseded_certificates(run_cli, issue, data_dir):
    first, second = issue(), issue()
    run_cli("revoke", ALICE, "--reason", "affiliationChanged", "--all", check=True)
    for serial in (first, second):
        entry = crl_entry(data_dir, serial)
        assert entry is not None and reason_of(entry) == x509.ReasonFlags.affiliation_changed
    statuses = {r["serial"]: r["status"] for r in db_rows(data_dir, "SELECT serial, status FROM certificates")}
    assert statuses == {first: "revoked", second: "revoked"}


@pytest.mark.parametrize("args", [[], ["--reason", "becauseISaidSo"]])
def test_revoke_needs_a_known_reason(run_cli, issue, data_dir, args):
    serial = issue()
    result = run_cli("revoke", ALICE, *args)
    assert result.returncode == 2
    assert "--reason" in result.stderr
    assert ca_crl_or_none(data_dir) is None or crl_entry(data_dir, serial) is None


def ca_crl_or_none(data_dir: Path):
    rows = query(data_dir / "ca" / "ca.db", "SELECT der FROM crl")
    return x509.load_der_x509_crl(rows[0]["der"]) if rows and rows[0]["der"] else None


# -- master keys -----------------------------------------------------------------
def test_keys_new_and_rotate_with_environment_keys_then_drop_the_old_key(
    run_cli, issue, base_env, tmp_path, audit_entries
):
    old = base_env["CERTPORTAL_MASTER_KEYS"]
    serial = issue()
    created = run_cli("keys", "new", check=True)
    new = created.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", new), created.stdout
    assert "CERTPORTAL_MASTER_KEYS" in created.stderr
    assert new != old

    rotated = run_cli("keys", "rotate", env={"CERTPORTAL_MASTER_KEYS": f"{new},{old}"}, check=True)
    assert "re-encrypted" in rotated.stdout

    only_new = {"CERTPORTAL_MASTER_KEYS": new}
    out = tmp_path / "out"
    run_cli("export", ALICE, "--out", str(out), "--reason", "after rotation", env=only_new, check=True)
    (export,) = exports_in(out)
    assert key_matches(export.open().cert.certificate, export.open().key)
    assert export.serial == serial
    # The embedded CA's keys were re-encrypted too: it still signs.
    issue("bob@example.com", env=only_new)

    # The old key alone opens nothing any more, and says so plainly.
    lost = run_cli(
        "export", ALICE, "--out", str(tmp_path / "lost"), "--reason", "x", env={"CERTPORTAL_MASTER_KEYS": old}
    )
    assert lost.returncode != 0
    assert "does not open with any configured master key" in lost.stderr
    assert "Traceback" not in lost.stderr
    assert not (tmp_path / "lost").exists() or not any((tmp_path / "lost").iterdir())
    # As the README says, entries signed by a dropped key can no longer be vouched for; kept last, it verifies them.
    both = {"CERTPORTAL_MASTER_KEYS": f"{new},{old}"}
    assert any(e["action"] == "keys.rotated" for e in audit_entries(env=both))
    assert "audit log intact" in run_cli("audit", "verify", env=both, check=True).stdout
    dropped = run_cli("audit", "verify", env=only_new)
    assert dropped.returncode != 0
    assert "not in the configured key set" in dropped.stdout


def test_keys_new_and_rotate_with_the_generated_key_file(run_cli, data_dir, tmp_path):
    key_file_only = {"CERTPORTAL_MASTER_KEYS": ""}  # unset: the first run generates master.keys
    run_cli("issue", ALICE, env=key_file_only, check=True)
    key_file = data_dir / "master.keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (old,) = key_file.read_text().split()
    added = run_cli("keys", "new", env=key_file_only, check=True)
    assert "master.keys" in added.stderr
    assert added.stdout == ""  # the key itself is never printed when the file holds it
    new, kept = key_file.read_text().split()
    assert kept == old and new != old
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    run_cli("keys", "rotate", env=key_file_only, check=True)
    key_file.write_text(new + "\n")  # drop the old key
    run_cli(
        "export", ALICE, "--out", str(tmp_path / "out"), "--reason", "after rotation", env=key_file_only, check=True
    )
    (export,) = exports_in(tmp_path / "out")
    assert key_matches(export.open().cert.certificate, export.open().key)


# -- doctor ----------------------------------------------------------------------
def test_doctor_passes_on_defaults(run_cli, issue):
    fresh = run_cli("doctor", check=True)
    assert "all checks passed" in fresh.stdout
    assert "PROBLEM" not in fresh.stdout
    issue()
    after = run_cli("doctor", check=True)
    assert "all checks passed" in after.stdout
    assert "CA backend local: ok" in after.stdout


def test_doctor_reports_a_world_readable_database_in_plain_words(run_cli, issue, data_dir):
    issue()
    (data_dir / "certportal.db").chmod(0o644)
    result = run_cli("doctor")
    assert result.returncode != 0
    assert "PROBLEM: the database" in result.stdout
    assert "readable by others" in result.stdout and "chmod 600" in result.stdout
    assert "all checks passed" not in result.stdout
    assert "Traceback" not in result.stderr


def test_doctor_reports_a_tampered_audit_log(run_cli, issue, data_dir):
    issue()
    conn = sqlite3.connect(data_dir / "certportal.db")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 1")
    conn.commit()
    conn.close()
    result = run_cli("doctor")
    assert result.returncode != 0
    assert "PROBLEM: audit: entry 1" in result.stdout
    assert "all checks passed" not in result.stdout
    verify = run_cli("audit", "verify")
    assert verify.returncode != 0
    assert "NOT intact" in verify.stderr


def test_doctor_reports_a_world_readable_master_key_file(run_cli, data_dir):
    key_file_only = {"CERTPORTAL_MASTER_KEYS": ""}
    run_cli("list", env=key_file_only, check=True)  # the first run generates master.keys
    (data_dir / "master.keys").chmod(0o644)
    result = run_cli("doctor", env=key_file_only)
    assert result.returncode != 0
    assert "PROBLEM" in result.stdout and "master.keys" in result.stdout


def test_doctor_reports_a_garbled_audit_anchor_in_plain_words(run_cli, issue, data_dir):
    issue()
    (data_dir / "audit.anchor").write_text('{"length": 9, "hea', encoding="utf-8")  # a torn write
    result = run_cli("doctor")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-300:]
    assert "PROBLEM: audit:" in result.stdout


def test_doctor_shows_lint_waivers(run_cli):
    waiver = {"CERTPORTAL__CA__LOCAL__LINT_WAIVERS": "cabf.internal_domain_name"}
    result = run_cli("doctor", env=waiver, check=True)
    assert "lint finding waived by [ca.local] lint_waivers: cabf.internal_domain_name" in result.stdout


# -- audit list ------------------------------------------------------------------
def test_audit_list_json_gives_one_entry_per_line(run_cli, issue, base_env, tmp_path):
    serial = issue()
    cli_in_process(base_env, "export", ALICE, "--out", str(tmp_path / "out"), "--reason", "siem test")
    entries = [json.loads(line) for line in run_cli("audit", "list", "--json", check=True).stdout.splitlines()]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    for entry in entries:
        assert {"seq", "at", "actor", "action", "subject", "detail", "origin", "key_id", "mac"} <= set(entry)
        assert isinstance(entry["detail"], dict)
    actions = [e["action"] for e in entries]
    for expected in ("request.created", "ca.order.placed", "certificate.issued", "certificate.exported"):
        assert expected in actions
    issued = next(e for e in entries if e["action"] == "certificate.issued")
    assert issued["detail"]["serial"] == serial and issued["subject"] == ALICE

    since = entries[-1]["at"]
    later = run_cli("audit", "list", "--json", "--since", since, check=True).stdout.splitlines()
    assert [json.loads(line)["action"] for line in later] == ["certificate.exported"]
    text = cli_in_process(base_env, "audit", "list").stdout.splitlines()
    assert len(text) == len(entries)
    assert f"audit log intact: {len(entries)} entries" in cli_in_process(base_env, "audit", "verify").stdout


# -- policy ----------------------------------------------------------------------
def snapshot(data_dir: Path) -> dict:
    tables = ("requests", "jobs", "work", "certificates", "audit")
    state = {t: db_rows(data_dir, f"SELECT * FROM {t} ORDER BY rowid") for t in tables}  # noqa: S608
    state["orders"] = ca_orders(data_dir)
    state["anchor"] = (data_dir / "audit.anchor").read_text()
    return state


@pytest.mark.parametrize(
    "mailbox",
    ["mallory@evil.example", "mallory@example.com.evil.example", "not-a-mailbox"],
)
def test_a_mailbox_outside_the_allowed_domains_changes_nothing(run_cli, issue, data_dir, mailbox):
    issue()
    before = snapshot(data_dir)
    result = run_cli("issue", mailbox)
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert mailbox in result.stderr
    assert snapshot(data_dir) == before


def test_another_allowed_domain_is_accepted_when_configured(run_cli):
    env = {"CERTPORTAL__POLICY__ALLOWED_DOMAINS": "example.com,Example.org"}
    result = run_cli("issue", "Carol@Example.ORG", env=env, check=True)
    assert result.stdout.startswith("issued carol@example.org serial ")


# -- failures --------------------------------------------------------------------
def test_a_certificate_the_ca_refuses_fails_the_request_in_plain_words(run_cli, data_dir, base_env):
    internal = {"CERTPORTAL__CA__LOCAL__PKI_URL": "http://pki.internal/certportal"}
    result = run_cli("issue", ALICE, env=internal)
    assert result.returncode != 0
    assert "error: alice@example.com: The certificate could not be issued" in result.stderr
    assert "cabf.internal_domain_name" in result.stderr  # the admin detail names the finding
    assert "Traceback" not in result.stderr
    assert db_rows(data_dir, "SELECT * FROM certificates") == []
    (request,) = db_rows(data_dir, "SELECT state, failure_reason FROM requests")
    assert request["state"] == "failed" and request["failure_reason"]
    assert [o["status"] for o in ca_orders(data_dir)] == ["rejected"]
    assert "state=failed" in listing(base_env)


def test_a_waived_lint_finding_lets_the_embedded_ca_issue(run_cli, data_dir, audit_entries):
    env = {
        "CERTPORTAL__CA__LOCAL__PKI_URL": "http://pki.internal/certportal",
        "CERTPORTAL__CA__LOCAL__LINT_WAIVERS": "cabf.internal_domain_name",
    }
    result = run_cli("issue", ALICE, env=env)
    assert result.stdout.startswith(f"issued {ALICE} serial "), result.stderr
    issued = [e for e in audit_entries(env=env) if e["action"] == "certificate.issued"]
    assert len(issued) == 1 and "cabf.internal_domain_name" in issued[0]["detail"]["ca_detail"]


def test_show_for_a_mailbox_without_a_certificate_says_so(run_cli):
    result = run_cli("show", ALICE, "--pem")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "has no current certificate" in result.stderr
