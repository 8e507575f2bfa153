"""The scheduler as a service: one instance at a time, its thread, and index-only queries."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest

from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.clock import parse_iso
from pipeline.drive import run_until_settled
from pipeline.lifecycle.scheduler import claim_lease, release_lease, run_pass, start_scheduler_thread
from pipeline.requests import create_request

D = timedelta(days=1)
OWNER = "test-scheduler"


@pytest.fixture
def lc(make_settings, notifier, clock):
    """``lc(**settings)`` -> a pipeline on the fake clock."""
    made = []

    def build(**overrides):
        p = build_pipeline(make_settings(**overrides), notifier=notifier, clock=clock)
        made.append(p)
        return p

    yield build
    for p in made:
        p.store.close()


def issue(p, mailbox):
    r = create_request(p, mailbox=mailbox, requested_by="cli:test", approved=True, approver="cli:test")
    assert run_until_settled(p, [r["id"]], timeout=60)[r["id"]] == "issued"
    return current_certificate(p, mailbox)


def test_one_scheduler_at_a_time_across_processes(lc, make_settings, clock):
    p1 = lc(**{"scheduler.lease_seconds": 600})
    p2 = lc(**{"scheduler.lease_seconds": 600})  # same database, its own connections
    assert run_pass(p1, owner="host-a") is not None
    assert run_pass(p2, owner="host-b") is None
    clock.advance(timedelta(seconds=599))
    assert run_pass(p2, owner="host-b") is None
    assert run_pass(p1, owner="host-a") is not None  # renewing its lease
    clock.advance(timedelta(seconds=601))
    assert run_pass(p2, owner="host-b") is not None  # host-a died: its lease ran out
    assert run_pass(p1, owner="host-a") is None
    release_lease(p2, "host-b")
    assert run_pass(p1, owner="host-a") is not None

    # Many contenders at the same instant: exactly one wins.
    clock.advance(timedelta(seconds=1200))
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def contend(name: str) -> None:
        barrier.wait()
        if claim_lease(p1, name, name="contest"):
            wins.append(name)
        p1.store.close()

    threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_the_scheduler_thread_runs_passes_and_gives_its_lease_back(lc, clock):
    p = lc(**{"scheduler.interval_seconds": 1})
    stop = threading.Event()
    thread = start_scheduler_thread(p, stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.store.one("SELECT owner FROM leases") is None:
        time.sleep(0.02)
    assert p.store.one("SELECT owner FROM leases") is not None
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert p.store.one("SELECT owner FROM leases") is None


# A full pass over a table (or its index) of certificates, requests or reminders, by name or alias.
_SCAN = re.compile(r"\bSCAN (certificates|requests|reminders|c|r|m)\b")


def test_every_query_of_a_pass_searches_an_index(lc, clock):
    p = lc(**{"lifecycle.auto_renew_days": 10})
    cert = issue(p, "kim@example.com")
    create_request(p, mailbox="lee@example.com", requested_by="ULEE", source="slack")
    clock.set(parse_iso(cert["not_after"]) - 5 * D)
    statements: list[str] = []
    p.store.conn.set_trace_callback(statements.append)
    try:
        report = run_pass(p, owner=OWNER)
    finally:
        p.store.conn.set_trace_callback(None)
    assert report.renewals == 1 and not report.errors
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    lifecycle_reads = [s for s in reads if re.search(r"\b(certificates|requests|reminders)\b", s)]
    assert len(lifecycle_reads) >= 5
    for sql in lifecycle_reads:
        plan = " | ".join(row[3] for row in p.store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert not _SCAN.search(plan), f"full scan in {sql!r}: {plan}"
