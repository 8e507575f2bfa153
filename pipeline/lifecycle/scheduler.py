"""The lifecycle scheduler: one pass does whatever is due, and one process at a time runs passes.

Several processes (``certportal serve``, ``certportal worker``) may run the loop;
a named row in ``leases``, claimed with ``BEGIN IMMEDIATE`` and renewed every pass,
lets exactly one of them work. A holder that dies simply lets the lease run out
(``[scheduler] lease_seconds``) and another takes over. Each pass takes its time
from the injected clock, so tests drive whole passes with a fake one.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.lifecycle import duties

log = logging.getLogger("certportal.scheduler")

LEASE_NAME = "scheduler"
T = TypeVar("T")


@dataclass
class PassReport:
    """What one pass did; ``errors`` names duties that raised (the others still ran)."""

    at: datetime
    requests_expired: int = 0
    certificates_expired: int = 0
    renewals: int = 0
    reminders_sent: int = 0
    reminders_recorded: int = 0
    crl_refreshed: bool = False
    errors: list[str] = field(default_factory=list)


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def claim_lease(p: Pipeline, owner: str, *, name: str = LEASE_NAME) -> bool:
    """Take or renew the lease ``name`` for ``owner``; False while someone else holds an unexpired one."""
    now = p.clock.now()
    until = now + timedelta(seconds=p.settings.scheduler.lease_seconds)
    with p.store.write() as conn:
        conn.execute(
            "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
            (name, owner, iso(until), iso(now)),
        )
        row = conn.execute("SELECT owner FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row["owner"] == owner


def release_lease(p: Pipeline, owner: str, *, name: str = LEASE_NAME) -> None:
    """Give the lease up at once (on shutdown), so another process need not wait for it to run out."""
    with p.store.write() as conn:
        conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))


def run_pass(p: Pipeline, *, owner: str) -> PassReport | None:
    """One pass, if ``owner`` holds the lease (None otherwise)."""
    if not claim_lease(p, owner):
        return None
    now = p.clock.now()
    report = PassReport(at=now)
    # Order matters: expiries first, so nothing expired is reminded or renewed;
    # automatic renewals before reminders, so a certificate being renewed is not
    # also reminded about.
    report.requests_expired = _attempt(report, "expire_requests", lambda: duties.expire_requests(p, now), 0)
    report.certificates_expired = _attempt(report, "expire_certificates", lambda: duties.expire_certificates(p, now), 0)
    report.renewals = _attempt(report, "auto_renew", lambda: duties.auto_renew(p, now), 0)
    report.reminders_sent, report.reminders_recorded = _attempt(
        report, "send_reminders", lambda: duties.send_reminders(p, now), (0, 0)
    )
    report.crl_refreshed = _attempt(report, "refresh_crl", lambda: duties.refresh_crl(p, now), False)
    if report.errors or report.reminders_sent or report.renewals or report.requests_expired:
        log.info("scheduler pass: %s", report)
    return report


def _attempt(report: PassReport, duty: str, work: Callable[[], T], fallback: T) -> T:
    # One broken duty (the CA failing to re-sign its CRL, say) must not stop the others.
    try:
        return work()
    except Exception:
        log.exception("scheduler duty %s failed", duty)
        report.errors.append(duty)
        return fallback


def run_scheduler(p: Pipeline, stop: threading.Event, *, owner: str | None = None) -> None:
    """Run a pass every ``[scheduler] interval_seconds`` until ``stop`` is set, then release the lease."""
    owner = owner or new_owner()
    interval = p.settings.scheduler.interval_seconds
    try:
        while not stop.is_set():
            try:
                run_pass(p, owner=owner)
            except Exception:  # the store was busy past its timeout, say: try again next interval
                log.exception("scheduler pass failed")
            stop.wait(interval)
    finally:
        try:
            release_lease(p, owner)
        except Exception:
            log.warning("could not release the scheduler lease; it runs out by itself")
        p.store.close()


def start_scheduler_thread(p: Pipeline, stop: threading.Event) -> threading.Thread:
    """Start the scheduler loop in a daemon thread (for ``serve`` and ``worker``); set ``stop`` to end it."""
    thread = threading.Thread(target=run_scheduler, args=(p, stop), name="certportal-scheduler", daemon=True)
    thread.start()
    return thread
