"""Run workers in-process until given requests settle (used by ``issue``, ``renew`` and ``bulk``)."""

from __future__ import annotations

import threading
import time

from pipeline.context import Pipeline
from pipeline.requests import FINAL_STATES
from pipeline.worker import Worker


def settled(p: Pipeline, request_ids: list[str]) -> dict[str, str]:
    """Map each request to its state, or ``parked`` when an admin must step in."""
    marks = ",".join("?" * len(request_ids))
    rows = p.store.all(
        f"SELECT r.id, r.state, j.state AS job_state FROM requests r LEFT JOIN jobs j "  # noqa: S608
        f"ON j.request_id = r.id AND j.kind = 'provision' WHERE r.id IN ({marks})",
        request_ids,
    )
    return {r["id"]: ("parked" if r["job_state"] == "parked" else r["state"]) for r in rows}


def is_settled(state: str) -> bool:
    return state in FINAL_STATES or state == "parked"


def run_until_settled(p: Pipeline, request_ids: list[str], *, timeout: float | None) -> dict[str, str]:
    """Work the queue until every request is final or parked, or ``timeout`` seconds pass."""
    stop = threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout

    def done() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            return True
        return all(is_settled(s) for s in settled(p, request_ids).values())

    if not done():
        Worker(p).run(stop, until=done)
    return settled(p, request_ids)
