"""The job queue: leases, reclaiming a dead worker's job, heartbeats, never deleting, backoff."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest

from pipeline.clock import FakeClock
from pipeline.queue import LeaseLost, Queue, backoff_delay, enqueue
from pipeline.store.db import Store


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "certportal.db").open()
    yield s
    s.close()


@pytest.fixture
def queue(store):
    return Queue(store, lease_seconds=60)


def add(store, clock, request_id="r1", *, kind="provision", after=0.0):
    with store.write() as conn:
        enqueue(
            conn,
            request_id=request_id,
            kind=kind,
            step="password",
            now=clock.now(),
            run_after=clock.now() + timedelta(seconds=after),
        )


def job_row(store, request_id="r1"):
    return store.one("SELECT * FROM jobs WHERE request_id = ?", (request_id,))


def test_a_claim_takes_a_lease_that_keeps_other_workers_out(store, queue, clock):
    add(store, clock)
    job = queue.claim("w1", clock.now())
    assert job is not None and job.lease_owner == "w1" and job.claims == 1
    row = job_row(store)
    assert row["state"] == "running" and row["lease_owner"] == "w1"
    assert queue.claim("w2", clock.now()) is None
    clock.advance(timedelta(seconds=59))
    assert queue.claim("w2", clock.now()) is None


def test_an_expired_lease_is_reclaimed_and_the_old_owner_is_locked_out(store, queue, clock):
    add(store, clock)
    first = queue.claim("w1", clock.now())
    clock.advance(timedelta(seconds=61))
    second = queue.claim("w2", clock.now())
    assert second is not None and second.id == first.id and second.claims == 2
    assert second.step == "password"
    with pytest.raises(LeaseLost), store.write() as conn:
        Queue.hold(conn, first)
    with store.write() as conn:
        Queue.hold(conn, second)


def test_heartbeat_extends_only_the_owners_lease(store, queue, clock):
    add(store, clock)
    job = queue.claim("w1", clock.now())
    clock.advance(timedelta(seconds=50))
    queue.heartbeat([job.id], "someone-else", clock.now())
    queue.heartbeat([job.id], "w1", clock.now())
    clock.advance(timedelta(seconds=50))  # 100 s after the claim, 50 s after the heartbeat
    assert queue.claim("w2", clock.now()) is None
    clock.advance(timedelta(seconds=11))
    assert queue.claim("w2", clock.now()) is not None


def test_jobs_are_never_deleted_and_finished_ones_are_not_claimed_again(store, queue, clock):
    add(store, clock)
    job = queue.claim("w1", clock.now())
    with store.write() as conn:
        Queue.advance(conn, job, "key", clock.now())
        Queue.finish(conn, job, "done", clock.now())
    row = job_row(store)
    assert row is not None and row["state"] == "done" and row["step"] == "key" and row["lease_owner"] is None
    clock.advance(timedelta(days=1))
    assert queue.claim("w2", clock.now()) is None
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 1


def test_a_job_waits_for_its_run_after_and_older_jobs_go_first(store, queue, clock):
    add(store, clock, "later", after=30)
    add(store, clock, "now")
    clock.advance(timedelta(seconds=1))
    add(store, clock, "next")
    assert queue.claim("w", clock.now()).request_id == "now"
    assert queue.claim("w", clock.now()).request_id == "next"
    assert queue.claim("w", clock.now()) is None
    clock.advance(timedelta(seconds=30))
    assert queue.claim("w", clock.now()).request_id == "later"


def test_reschedule_releases_the_lease_and_counts_failures(store, queue, clock):
    add(store, clock)
    job = queue.claim("w1", clock.now())
    queue.reschedule(job, delay=10, now=clock.now(), error="CA timed out", failed=True)
    row = job_row(store)
    assert (row["state"], row["attempts"], row["lease_owner"], row["last_error"]) == (
        "queued",
        1,
        None,
        "CA timed out",
    )
    assert queue.claim("w2", clock.now()) is None
    clock.advance(timedelta(seconds=10))
    again = queue.claim("w2", clock.now())
    assert again is not None and again.attempts == 1
    queue.reschedule(again, delay=0, now=clock.now(), failed=False)  # a pending order is not a failure
    assert job_row(store)["attempts"] == 1


def test_a_worker_that_lost_its_lease_cannot_reschedule(store, queue, clock):
    add(store, clock)
    stale = queue.claim("w1", clock.now())
    clock.advance(timedelta(seconds=61))
    queue.claim("w2", clock.now())
    with pytest.raises(LeaseLost):
        queue.reschedule(stale, delay=100, now=clock.now(), failed=True)
    assert job_row(store)["lease_owner"] == "w2"


def test_enqueue_does_not_duplicate_an_active_job_and_requeues_a_finished_one(store, queue, clock):
    add(store, clock)
    add(store, clock)
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 1
    job = queue.claim("w1", clock.now())
    add(store, clock)  # still running: untouched
    assert job_row(store)["lease_owner"] == "w1"
    with store.write() as conn:
        Queue.finish(conn, job, "failed", clock.now(), "gave up")
    add(store, clock)
    row = job_row(store)
    assert (row["state"], row["attempts"], row["step"]) == ("queued", 0, "password")
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 1


def test_claim_only_takes_the_kinds_asked_for(store, queue, clock):
    add(store, clock, "r1", kind="publish")
    assert queue.claim("w", clock.now(), kinds=("provision",)) is None
    assert queue.claim("w", clock.now(), kinds=("publish",)).kind == "publish"


@pytest.mark.parametrize("attempts", [0, 1, 2, 5, 9, 10, 20, 50])
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempts):
    base, cap = 2.0, 600.0
    ceiling = min(cap, base * 2**attempts)
    delays = [backoff_delay(attempts, base, cap) for _ in range(200)]
    assert all(0.5 * ceiling <= d <= ceiling for d in delays)
    assert len(set(delays)) > 150  # jitter: workers that failed together do not retry together
    assert max(delays) <= cap


def test_backoff_keeps_growing_until_the_cap():
    means = [sum(backoff_delay(a, 1.0, 1000.0) for _ in range(100)) / 100 for a in range(9)]
    assert all(later > earlier * 1.5 for earlier, later in pairwise(means))
