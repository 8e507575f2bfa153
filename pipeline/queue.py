"""The job queue: lease-based claims in SQLite, never deleting a job on dequeue.

A claim is one ``UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE``: it takes the
oldest runnable job whose lease is free or expired and stamps our lease on it. A
worker that dies simply lets its lease expire; the job is then claimed again and
resumes from its persisted step (at-least-once delivery, with idempotent steps).
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.clock import iso
from pipeline.store.db import Store

ACTIVE = ("queued", "running")
KINDS = ("provision", "publish", "cancel", "revoke")


@dataclass(frozen=True)
class Job:
    id: int
    request_id: str
    kind: str
    step: str
    attempts: int
    claims: int
    lease_owner: str
    payload: str = "{}"


class LeaseLost(Exception):
    """Another worker holds this job now (our lease expired); stop working on it."""


def enqueue(
    conn: sqlite3.Connection,
    *,
    request_id: str,
    kind: str,
    step: str,
    now: datetime,
    run_after: datetime | None = None,
    payload: dict[str, str] | None = None,
) -> None:
    """Queue a job inside the caller's transaction; re-queues a finished job of the same kind."""
    conn.execute(
        "INSERT INTO jobs (request_id, kind, state, step, run_after, payload, created_at, updated_at) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) "
        "ON CONFLICT (request_id, kind) DO UPDATE SET state = 'queued', step = excluded.step, attempts = 0, "
        "payload = excluded.payload, "
        "run_after = excluded.run_after, lease_owner = NULL, lease_expires = NULL, updated_at = excluded.updated_at "
        "WHERE jobs.state NOT IN ('queued', 'running')",
        (request_id, kind, step, iso(run_after or now), json.dumps(payload or {}), iso(now), iso(now)),
    )


class Queue:
    def __init__(self, store: Store, *, lease_seconds: float) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)

    def claim(self, owner: str, now: datetime, kinds: tuple[str, ...] = KINDS) -> Job | None:
        with self.store.write() as conn:
            return self.claim_in(conn, owner, now, kinds)

    def claim_in(
        self, conn: sqlite3.Connection, owner: str, now: datetime, kinds: tuple[str, ...] = KINDS
    ) -> Job | None:
        """Inside a write transaction: lease the oldest runnable job to ``owner``."""
        marks = ",".join("?" * len(kinds))
        stamp = iso(now)
        row = conn.execute(
            f"UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?, claims = claims + 1, "  # noqa: S608
            f"updated_at = ? WHERE id = (SELECT id FROM jobs WHERE state IN ('queued', 'running') "
            f"AND run_after <= ? AND (lease_expires IS NULL OR lease_expires < ?) AND kind IN ({marks}) "
            f"ORDER BY run_after LIMIT 1) RETURNING id, request_id, kind, step, attempts, claims, lease_owner, payload",
            (owner, iso(now + self.lease), stamp, stamp, stamp, *kinds),
        ).fetchone()
        return Job(**dict(row)) if row else None

    def complete(self, job: Job, now: datetime, *, claim_next: bool = True) -> Job | None:
        """Mark ``job`` done and, in the same transaction, lease this owner's next job.

        One commit per job instead of two is most of the queue's cost.
        """
        with self.store.write() as conn:
            self.finish(conn, job, "done", now)
            return self.claim_in(conn, job.lease_owner, now) if claim_next else None

    def heartbeat(self, job_ids: list[int], owner: str, now: datetime) -> None:
        if not job_ids:
            return
        marks = ",".join("?" * len(job_ids))
        with self.store.write() as conn:
            conn.execute(
                f"UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state = 'running' AND id IN ({marks})",  # noqa: S608
                (iso(now + self.lease), owner, *job_ids),
            )

    @staticmethod
    def hold(conn: sqlite3.Connection, job: Job) -> None:
        """Inside a write transaction: raise LeaseLost unless we still own ``job``."""
        row = conn.execute(
            "SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND state = 'running'", (job.id, job.lease_owner)
        ).fetchone()
        if row is None:
            raise LeaseLost(f"job {job.id} is no longer ours")

    @staticmethod
    def advance(conn: sqlite3.Connection, job: Job, step: str, now: datetime) -> None:
        """Inside a write transaction: record the next step, or raise LeaseLost if the job is not ours.

        The lease check is the UPDATE's own condition, so it costs no extra query.
        """
        moved = conn.execute(
            "UPDATE jobs SET step = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (step, iso(now), job.id, job.lease_owner),
        ).rowcount
        if moved != 1:
            raise LeaseLost(f"job {job.id} is no longer ours")

    def reschedule(self, job: Job, *, delay: float, now: datetime, error: str = "", failed: bool) -> None:
        """Release the lease and run again after ``delay``; ``failed`` counts toward the attempt limit."""
        with self.store.write() as conn:
            self.hold(conn, job)
            conn.execute(
                "UPDATE jobs SET state = 'queued', run_after = ?, lease_owner = NULL, lease_expires = NULL, "
                "attempts = attempts + ?, last_error = ?, updated_at = ? WHERE id = ?",
                (iso(now + timedelta(seconds=delay)), 1 if failed else 0, error[:1000], iso(now), job.id),
            )

    @staticmethod
    def finish(conn: sqlite3.Connection, job: Job, state: str, now: datetime, error: str = "") -> None:
        """Inside a write transaction: mark the job done, failed or parked and release it.

        Raises LeaseLost (rolling the caller's transaction back) unless we still own it.
        """
        released = conn.execute(
            "UPDATE jobs SET state = ?, lease_owner = NULL, lease_expires = NULL, last_error = ?, updated_at = ? "
            "WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (state, error[:1000], iso(now), job.id, job.lease_owner),
        ).rowcount
        if released != 1:
            raise LeaseLost(f"job {job.id} is no longer ours")

    def pending_count(self) -> int:
        row = self.store.one("SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running')")
        return int(row["n"]) if row else 0


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in its upper half."""
    delay = min(cap, base * (2 ** min(attempts, 20)))
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
