"""The audit chain: verify catches edited, deleted, reordered, truncated and re-forged entries.

An attacker with database access can drop the append-only triggers, so the tests
do exactly that before tampering.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from pipeline.audit import GENESIS, AuditLog, _mac
from pipeline.clock import FakeClock
from pipeline.secretbox import SecretBox, new_key
from pipeline.store.db import Store


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def master():
    return new_key()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "certportal.db").open()
    yield s
    s.close()


def make_log(store, master, clock, tmp_path, *extra_keys):
    return AuditLog(store, box=SecretBox([master, *extra_keys]), clock=clock, anchor_path=tmp_path / "audit.anchor")


@pytest.fixture
def log(store, master, clock, tmp_path):
    audit = make_log(store, master, clock, tmp_path)
    for i in range(6):
        audit.record(actor="cli:admin", action="certificate.exported", subject=f"u{i}@example.com", serial=f"{i:x}")
        clock.advance(timedelta(minutes=1))
    return audit


def tamper(store, *statements):
    conn = store.conn
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for sql, params in statements:
        conn.execute(sql, params)


def test_an_untouched_log_verifies(log):
    report = log.verify()
    assert report.ok, report.problems
    assert report.entries == 6


def test_an_edited_entry_is_detected(log, store):
    detail = json.dumps({"serial": "ff"}, sort_keys=True)
    tamper(store, ("UPDATE audit SET detail = ? WHERE seq = 3", (detail,)))
    report = log.verify()
    assert not report.ok
    assert any("entry 3" in p for p in report.problems)


@pytest.mark.parametrize("column", ["actor", "action", "subject", "at", "origin"])
def test_every_column_is_covered_by_the_mac(log, store, column):
    tamper(store, (f"UPDATE audit SET {column} = 'forged' WHERE seq = 2", ()))  # noqa: S608
    assert not log.verify().ok


def test_a_deleted_entry_is_detected(log, store):
    tamper(store, ("DELETE FROM audit WHERE seq = 4", ()))
    report = log.verify()
    assert not report.ok
    assert any("entry 4 is missing" in p for p in report.problems)


def test_a_deleted_first_entry_is_detected(log, store):
    tamper(store, ("DELETE FROM audit WHERE seq = 1", ()))
    assert not log.verify().ok


def test_reordered_entries_are_detected(log, store):
    tamper(
        store,
        ("UPDATE audit SET seq = -1 WHERE seq = 2", ()),
        ("UPDATE audit SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE audit SET seq = 3 WHERE seq = -1", ()),
    )
    report = log.verify()
    assert not report.ok
    assert any("entry 2" in p for p in report.problems)


@pytest.mark.parametrize("keep", [0, 4, 5])
def test_a_truncated_log_is_detected(log, store, keep):
    tamper(store, ("DELETE FROM audit WHERE seq > ?", (keep,)))
    report = log.verify()
    assert not report.ok
    assert any("truncated" in p for p in report.problems)


def test_a_missing_anchor_is_detected(log, tmp_path):
    (tmp_path / "audit.anchor").unlink()
    report = log.verify()
    assert not report.ok
    assert any("anchor" in p for p in report.problems)


def rewrite_chain(store, mac_key: bytes, *, from_seq: int, key_id: str | None = None) -> str:
    """Recompute every MAC from ``from_seq`` on, as a forger would; returns the new head."""
    rows = [dict(r) for r in store.conn.execute("SELECT * FROM audit ORDER BY seq")]
    prev = GENESIS
    for row in rows:
        if key_id is not None and row["seq"] >= from_seq:
            row["key_id"] = key_id
        if row["seq"] >= from_seq:
            row["mac"] = _mac(mac_key, prev, row)
            tamper(
                store, ("UPDATE audit SET mac = ?, key_id = ? WHERE seq = ?", (row["mac"], row["key_id"], row["seq"]))
            )
        prev = row["mac"]
    return prev


def forge(store, tmp_path, mac_key: bytes, *, key_id: str | None = None) -> None:
    tamper(store, ("UPDATE audit SET subject = 'mallory@example.com' WHERE seq = 2", ()))
    head = rewrite_chain(store, mac_key, from_seq=2, key_id=key_id)
    length = store.one("SELECT max(seq) AS n FROM audit")["n"]
    (tmp_path / "audit.anchor").write_text(json.dumps({"length": length, "head": head}) + "\n", encoding="utf-8")


def test_a_chain_rewritten_without_the_master_key_is_detected(log, store, tmp_path):
    attacker_key = next(iter(SecretBox([new_key()]).audit_keys().values()))
    forge(store, tmp_path, attacker_key)
    report = log.verify()
    assert not report.ok
    assert any("entry 2" in p for p in report.problems)


def test_a_chain_rewritten_under_a_made_up_key_id_is_detected(log, store, tmp_path):
    attacker_box = SecretBox([new_key()])
    forge(store, tmp_path, next(iter(attacker_box.audit_keys().values())), key_id=attacker_box.signing_audit_key_id)
    report = log.verify()
    assert not report.ok
    assert any("not in the configured key set" in p for p in report.problems)


def test_only_the_master_key_can_rewrite_the_chain(log, store, tmp_path, master):
    """The control for the two tests above: with the real key the forgery passes, so the key is what stops it."""
    box = SecretBox([master])
    forge(store, tmp_path, box.audit_keys()[box.signing_audit_key_id])
    assert log.verify().ok


def test_entries_after_key_rotation_verify_while_the_old_key_is_kept(store, master, clock, tmp_path, log):
    newer = new_key()
    rotated = make_log(store, newer, clock, tmp_path, master)
    rotated.record(actor="cli:admin", action="keys.rotated")
    report = rotated.verify()
    assert report.ok, report.problems
    assert report.entries == 7
    signed_by = {r["seq"]: r["key_id"] for r in store.all("SELECT seq, key_id FROM audit")}
    assert signed_by[7] == SecretBox([newer]).signing_audit_key_id != signed_by[1]
    # Once the retired key is dropped, its entries can no longer be vouched for, and verify says so.
    dropped = make_log(store, newer, clock, tmp_path).verify()
    assert not dropped.ok
    assert any("not in the configured key set" in p for p in dropped.problems)


def test_appends_after_the_anchor_still_verify_and_the_anchor_only_moves_forward(log, store, tmp_path):
    anchor = json.loads((tmp_path / "audit.anchor").read_text(encoding="utf-8"))
    assert anchor["length"] == 6
    with store.write() as conn:
        log.append(conn, actor="worker", action="request.failed")
    assert log.verify().ok  # committed, anchor not yet moved: still intact
    log._anchor(3)  # a slow process anchoring an older entry must not move the anchor back
    assert json.loads((tmp_path / "audit.anchor").read_text(encoding="utf-8"))["length"] == 6
    log.anchor_latest()
    assert json.loads((tmp_path / "audit.anchor").read_text(encoding="utf-8"))["length"] == 7


def test_entries_list_in_order_with_decoded_detail_and_since(log, clock):
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["detail"] == {"serial": "0"}
    since = entries[3]["at"]
    assert [e["seq"] for e in log.entries(since)] == [4, 5, 6]


def test_a_garbled_anchor_is_reported_not_raised(log, tmp_path):
    (tmp_path / "audit.anchor").write_text('{"length": 6, "he', encoding="utf-8")  # e.g. a torn write
    report = log.verify()
    assert not report.ok
    assert any("anchor" in p for p in report.problems)
