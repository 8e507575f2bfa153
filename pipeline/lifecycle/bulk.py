"""Bulk rollout: a CSV of mailboxes becomes approved requests, resumably.

The plan is computed from the database every run, so running the same file again
after an interruption skips every mailbox that already has a certificate or a
request in flight and follows those in flight to the end. The database's
one-open-request-per-mailbox rule makes a duplicate impossible even if two runs
race.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pipeline.certificates import current_certificate
from pipeline.context import Pipeline
from pipeline.errors import PolicyError
from pipeline.requests import create_request, get_request, normalize_mailbox, open_request_for
from pipeline.settings import KEY_TYPES, PolicySettings


@dataclass(frozen=True)
class Entry:
    line: int
    mailbox: str
    key_type: str | None = None


@dataclass(frozen=True)
class Problem:
    line: int
    mailbox: str
    reason: str


@dataclass
class Plan:
    to_issue: list[Entry] = field(default_factory=list)
    issued: list[tuple[Entry, dict[str, Any]]] = field(default_factory=list)  # (entry, current certificate)
    in_flight: list[tuple[Entry, dict[str, Any]]] = field(default_factory=list)  # (entry, open request)
    awaiting_approval: list[tuple[Entry, dict[str, Any]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates: int = 0

    @property
    def nothing_to_do(self) -> bool:
        return not (self.to_issue or self.in_flight or self.awaiting_approval or self.problems)


def read_rollout(text: str, policy: PolicySettings) -> tuple[list[Entry], list[Problem], int]:
    """Parse the CSV: a header row naming ``mailbox`` (and optionally ``key``), one mailbox a row.

    Returns the valid entries (first occurrence of each mailbox), the rows that
    cannot be used and why, and how many duplicate rows were dropped. Raises
    PolicyError when there is no ``mailbox`` column.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    columns = [c.strip().lower() for c in header or []]
    if "mailbox" not in columns:
        raise PolicyError("the first row must be a header naming a 'mailbox' column (and optionally 'key')")
    at_mailbox = columns.index("mailbox")
    at_key = columns.index("key") if "key" in columns else None
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    duplicates = 0
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        raw = row[at_mailbox].strip() if at_mailbox < len(row) else ""
        key = row[at_key].strip().lower() if at_key is not None and at_key < len(row) else ""
        try:
            mailbox = normalize_mailbox(policy, raw)
        except PolicyError as exc:
            problems.append(Problem(number, raw, str(exc)))
            continue
        if key and key not in KEY_TYPES:
            problems.append(Problem(number, mailbox, f"unknown key type {key!r}; choose one of {', '.join(KEY_TYPES)}"))
            continue
        if mailbox in seen:
            duplicates += 1
            continue
        seen.add(mailbox)
        entries.append(Entry(number, mailbox, key or None))
    return entries, problems, duplicates


def plan_rollout(p: Pipeline, text: str) -> Plan:
    """What a run would do now, read from the database; changes nothing. Raises PolicyError."""
    entries, problems, duplicates = read_rollout(text, p.settings.policy)
    plan = Plan(problems=problems, duplicates=duplicates)
    for entry in entries:
        current = current_certificate(p, entry.mailbox)
        if current is not None:
            plan.issued.append((entry, current))
            continue
        request = open_request_for(p, entry.mailbox)
        if request is None:
            plan.to_issue.append(entry)
        elif request["state"] == "pending_approval":
            plan.awaiting_approval.append((entry, request))
        else:
            plan.in_flight.append((entry, request))
    return plan


def start(p: Pipeline, entry: Entry, *, actor: str) -> dict[str, Any]:
    """Create the approved request for ``entry``, or return the one that appeared meanwhile."""
    try:
        return create_request(
            p,
            mailbox=entry.mailbox,
            requested_by=actor,
            key_type=entry.key_type,
            reason="bulk rollout",
            source="bulk",
            approved=True,
            approver=actor,
        )
    except PolicyError:
        existing = open_request_for(p, entry.mailbox)
        if existing is None:
            raise
        return existing


def failure_reason(p: Pipeline, request_id: str, outcome: str) -> str:
    """Plain words for why a followed request did not end issued."""
    request = get_request(p, request_id)
    if outcome == "parked":
        return f"needs an admin (`certportal reconcile {request_id}`): {request['admin_detail']}"
    if outcome in ("approved", "provisioning"):
        return f"still {outcome}; run the same command again to follow it"
    detail = f" ({request['admin_detail']})" if request["admin_detail"] else ""
    return f"{outcome}: {request['failure_reason'] or outcome}{detail}"
