"""Lifecycle commands: renew, bulk rollout, stats and the embedded CA's CRL."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from bot.cli.admin import finish
from bot.cli.common import actor, fail, state
from pipeline.context import Pipeline
from pipeline.drive import is_settled, settled
from pipeline.lifecycle import bulk as rollout
from pipeline.lifecycle.duties import CrlIssuingCA
from pipeline.lifecycle.renewal import request_renewal
from pipeline.lifecycle.views import certificate_counts, expiries_by_week, request_counts
from pipeline.requests import decide
from pipeline.settings import KEY_TYPES
from pipeline.worker import Worker

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|min|m|h|hour))?\s*$", re.IGNORECASE)
_PER = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}


@click.command()
@click.argument("mailbox")
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default=None, help="Key type (default: as before).")
@click.option("--reason", default="", help="Why, for the audit.")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for issuance.")
def renew(mailbox: str, key_type: str | None, reason: str, timeout: float) -> None:
    """Renew MAILBOX's current certificate now: a new key and a new order, run to the end."""
    p = state().pipeline
    who = actor()
    request = request_renewal(p, mailbox=mailbox, requested_by=who, source="cli", reason=reason, key_type=key_type)
    if request["state"] == "pending_approval":
        # The admin at the keyboard is the approver, as with `issue`.
        decide(p, request_id=request["id"], approver=who, approve=True, note="renewed from the command line")
    finish(request["id"], timeout)


@click.group(name="ca")
def ca_group() -> None:
    """The embedded CA's own duties."""


@ca_group.command(name="crl")
@click.option("--pem", is_flag=True, required=True, help="Print PEM (the only format).")
def ca_crl(pem: bool) -> None:
    """Print the embedded CA's current CRL (re-signed first if it is due)."""
    ca = state().pipeline.ca
    if not isinstance(ca, CrlIssuingCA):
        fail(f"the {ca.name} CA publishes its own CRL; CertPortal signs CRLs only for the embedded CA")
        return
    click.echo(ca.crl().public_bytes(serialization.Encoding.PEM).decode().strip())


def parse_rate(text: str) -> float:
    """``N/min`` (also ``N/s``, ``N/h``; a bare N is per minute) -> requests per second."""
    match = _RATE.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r}: write a positive rate such as 30/min")
    return float(match.group(1)) / _PER[(match.group(2) or "min").lower()]


@click.command(name="bulk")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--commit", is_flag=True, help="Act; without it, only print what would be done.")
@click.option("--rate", default="60/min", show_default=True, help="How fast to place new requests (N/min).")
@click.option("--timeout", type=float, default=None, help="Stop following after this many seconds.")
def bulk_(csv_file: Path, commit: bool, rate: str, timeout: float | None) -> None:
    """Issue certificates for every mailbox in FILE.csv (header row naming `mailbox`, optionally `key`).

    Resumable: running it again skips mailboxes already issued or in flight and
    follows those in flight to the end.
    """
    per_second = parse_rate(rate)
    p = state().pipeline
    plan = rollout.plan_rollout(p, csv_file.read_text(encoding="utf-8-sig"))
    _print_plan(plan, p.settings.crypto.key_type, commit)
    if not commit:
        click.echo(
            f"dry run: {len(plan.to_issue)} to issue, {len(plan.issued)} already issued, "
            f"{len(plan.in_flight)} in flight, {len(plan.awaiting_approval)} awaiting approval, "
            f"{len(plan.problems)} unusable; nothing was changed (add --commit to act)"
        )
        return
    failures = [(x.mailbox or f"line {x.line}", x.reason) for x in plan.problems]
    failures += [
        (e.mailbox, f"request {r['id']} is waiting for an approver; decide it in Slack, then run again")
        for e, r in plan.awaiting_approval
    ]
    outcomes = _feed_and_follow(p, plan, per_second, timeout) if plan.to_issue or plan.in_flight else {}
    issued = 0
    for mailbox, (request_id, outcome) in outcomes.items():
        if outcome == "issued":
            issued += 1
        elif request_id is None:
            failures.append((mailbox, "not started before --timeout; run the same command again"))
        else:
            failures.append((mailbox, rollout.failure_reason(p, request_id, outcome)))
    click.echo(
        f"issued {issued}, already issued {len(plan.issued)}, failed or unfinished {len(failures)}"
        + (f", duplicate rows ignored {plan.duplicates}" if plan.duplicates else "")
    )
    for mailbox, why in failures:
        click.echo(f"FAILED {mailbox}: {why}")
    if failures:
        fail(f"{len(failures)} mailbox(es) without a certificate; fix the causes and run again")


def _print_plan(plan: rollout.Plan, default_key: str, commit: bool) -> None:
    verb = "issue" if commit else "would issue"
    for entry in plan.to_issue:
        click.echo(f"{verb} {entry.mailbox} (key {entry.key_type or default_key})")
    for entry, cert in plan.issued:
        click.echo(f"skip {entry.mailbox}: already issued, serial {cert['serial']} expires {cert['not_after'][:10]}")
    for entry, request in plan.in_flight:
        click.echo(f"follow {entry.mailbox}: request {request['id']} is {request['state']}")
    for entry, request in plan.awaiting_approval:
        click.echo(f"wait {entry.mailbox}: request {request['id']} is waiting for an approver")
    for problem in plan.problems:
        click.echo(f"unusable line {problem.line} {problem.mailbox}: {problem.reason}")


def _feed_and_follow(
    p: Pipeline, plan: rollout.Plan, per_second: float, timeout: float | None
) -> dict[str, tuple[str | None, str]]:
    """Place requests at ``per_second`` while workers run; mailbox -> (request id or None, outcome)."""
    who = actor()
    follow = {request["id"]: entry.mailbox for entry, request in plan.in_flight}
    waiting = deque(plan.to_issue)
    gap = 1.0 / per_second
    started = next_at = time.monotonic()
    deadline = None if timeout is None else started + timeout
    stop = threading.Event()
    workers = threading.Thread(target=Worker(p).run, args=(stop,), name="bulk-workers", daemon=True)
    workers.start()
    states: dict[str, str] = {}
    try:
        with click.progressbar(
            length=len(follow) + len(waiting),
            label="issuing",
            show_eta=True,
            show_pos=True,
            file=sys.stderr,
        ) as bar:
            done = 0
            while True:
                now = time.monotonic()
                while waiting and now >= next_at:
                    entry = waiting.popleft()
                    follow[rollout.start(p, entry, actor=who)["id"]] = entry.mailbox
                    next_at += gap
                states = settled(p, list(follow)) if follow else {}
                finished = sum(1 for s in states.values() if is_settled(s))
                bar.update(finished - done)
                done = finished
                if not waiting and finished == len(follow):
                    break
                if deadline is not None and now > deadline:
                    break
                time.sleep(min(0.1, max(0.01, next_at - now)) if waiting else 0.1)
    finally:
        stop.set()
        workers.join()
    outcomes: dict[str, tuple[str | None, str]] = {e.mailbox: (None, "not started") for e in waiting}
    outcomes.update({mailbox: (rid, states.get(rid, "approved")) for rid, mailbox in follow.items()})
    return outcomes


def _stats_line(title: str, counts: dict[str, int]) -> str:
    total = sum(counts.values())
    body = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
    return f"{title} ({total}): {body}"


@click.command()
@click.option("--weeks", type=click.IntRange(1, 104), default=8, show_default=True, help="Weeks of expiries to show.")
def stats(weeks: int) -> None:
    """Counts by status and the current certificates expiring in each coming week."""
    p = state().pipeline
    now = p.clock.now()
    click.echo(_stats_line("certificates", certificate_counts(p)))
    click.echo(_stats_line("requests", request_counts(p)))
    click.echo(f"current certificates expiring, by week (weeks start on Monday, UTC), next {weeks} weeks:")
    for week, count in expiries_by_week(p, now, weeks):
        click.echo(f"  week of {week.isoformat()}: {count}")


COMMANDS = [renew, ca_group, bulk_, stats]
