"""Admin views over the certificate table: what is expiring, and counts for ``certportal stats``.

Range queries over ``certificates (status, not_after)``; nothing here writes.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import PolicyError

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_WINDOW = re.compile(r"^\s*(\d+)\s*([hdw]?)\s*$", re.IGNORECASE)


def parse_window(text: str) -> timedelta:
    """``30d``, ``2w``, ``12h`` or a bare number of days. Raises PolicyError."""
    match = _WINDOW.match(text or "")
    if not match:
        raise PolicyError(f"{text!r} is not a duration; write e.g. 30d, 2w or 12h")
    return int(match.group(1)) * _UNITS[(match.group(2) or "d").lower()]


def expiring_within(p: Pipeline, now: datetime, window: timedelta) -> list[dict[str, Any]]:
    """Current certificates whose notAfter falls before ``now + window``, soonest first.

    Includes any already past notAfter that the scheduler has not marked expired yet.
    """
    return p.store.all(
        "SELECT * FROM certificates WHERE status = 'active' AND not_after <= ? ORDER BY not_after, mailbox",
        (iso(now + window),),
    )


def certificate_counts(p: Pipeline) -> dict[str, int]:
    rows = p.store.all("SELECT status, count(*) AS n FROM certificates GROUP BY status ORDER BY status")
    return {r["status"]: r["n"] for r in rows}


def request_counts(p: Pipeline) -> dict[str, int]:
    rows = p.store.all("SELECT state, count(*) AS n FROM requests GROUP BY state ORDER BY state")
    return {r["state"]: r["n"] for r in rows}


def week_start(day: date) -> date:
    """The Monday of ``day``'s ISO week."""
    return day - timedelta(days=day.weekday())


def expiries_by_week(p: Pipeline, now: datetime, weeks: int) -> list[tuple[date, int]]:
    """Current certificates expiring in each of the next ``weeks`` ISO weeks (this one first), zeros included.

    Certificates already past notAfter but not yet marked expired count in this week.
    """
    first = week_start(now.date())
    end = first + timedelta(weeks=weeks)
    # '-6 days' then 'weekday 1' lands on the Monday of the week (or the day itself if a Monday).
    rows = p.store.all(
        "SELECT date(substr(not_after, 1, 10), '-6 days', 'weekday 1') AS week, count(*) AS n FROM certificates "
        "WHERE status = 'active' AND not_after < ? GROUP BY week",
        (end.isoformat(),),
    )
    counts = {first + timedelta(weeks=i): 0 for i in range(weeks)}
    for r in rows:
        week = max(date.fromisoformat(r["week"]), first)
        counts[week] = counts.get(week, 0) + r["n"]
    return sorted(counts.items())
