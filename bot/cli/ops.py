"""Operations commands: worker, audit, keys, doctor, reconcile."""

from __future__ import annotations

import json
import signal
import stat
import threading
from pathlib import Path

import click

from bot.cli.common import actor, fail, state
from bot.wiring import master_box
from pipeline.crypto.pkcs12 import profile_round_trips
from pipeline.keyrotation import rotate_all
from pipeline.lifecycle.scheduler import start_scheduler_thread
from pipeline.queue import enqueue
from pipeline.requests import get_request
from pipeline.secretbox import key_file, new_key, read_key_file, write_key_file
from pipeline.worker import Worker


@click.command()
@click.option("--no-scheduler", is_flag=True, help="Do not run the lifecycle scheduler in this process.")
def worker(no_scheduler: bool) -> None:
    """Run the provisioning worker and the lifecycle scheduler until interrupted.

    SIGINT/SIGTERM finish the current step. The scheduler (reminders, automatic
    renewal, expiries, CRL) runs in one process at a time, however many run it.
    """
    p = state().pipeline
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheduler = None if no_scheduler else start_scheduler_thread(p, stop)
    click.echo(
        f"worker running with {p.settings.worker.threads} threads"
        + ("" if no_scheduler else f"; scheduler every {p.settings.scheduler.interval_seconds}s"),
        err=True,
    )
    Worker(p).run(stop)
    if scheduler is not None:
        scheduler.join(timeout=30)


@click.group()
def audit() -> None:
    """Inspect and verify the audit log."""


@audit.command(name="verify")
def audit_verify() -> None:
    """Check the chain and its anchor; exit 1 on any edit, deletion, reordering or truncation."""
    report = state().pipeline.audit.verify()
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    if not report.ok:
        fail(f"audit log is NOT intact ({len(report.problems)} problems in {report.entries} entries)")
    click.echo(f"audit log intact: {report.entries} entries")


@audit.command(name="list")
@click.option("--since", default=None, help="ISO 8601 time; entries at or after it.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for a SIEM.")
def audit_list(since: str | None, as_json: bool) -> None:
    """Print audit entries."""
    for entry in state().pipeline.audit.entries(since):
        if as_json:
            click.echo(json.dumps(entry, sort_keys=True))
        else:
            detail = " ".join(f"{k}={v}" for k, v in sorted(entry["detail"].items()))
            click.echo(
                f"{entry['seq']:>6} {entry['at'][:19]} {entry['actor']} {entry['action']} "
                f"{entry['subject']} {detail}".rstrip()
            )


@click.group()
def keys() -> None:
    """Manage the master key set."""


@keys.command(name="new")
def keys_new() -> None:
    """Create a master key: added first in the key file if it is in use, else printed."""
    s = state().settings
    key = new_key()
    if s.secrets.master_keys:
        click.echo(key)
        click.echo(
            "put this key first in CERTPORTAL_MASTER_KEYS (keep the old keys after it), "
            "then run `certportal keys rotate`",
            err=True,
        )
        return
    path = key_file(s.data_dir)
    existing = read_key_file(path) if path.exists() else []
    write_key_file(path, [key, *existing])
    click.echo(f"added a new first key to {path.name}; run `certportal keys rotate` to re-encrypt", err=True)


@keys.command(name="rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the first master key."""
    p = state().pipeline
    counts = rotate_all(p)
    p.audit.record(actor=actor(), action="keys.rotated", counts=counts)
    click.echo("re-encrypted " + ", ".join(f"{n} {what}" for what, n in counts.items()))


@click.command()
def doctor() -> None:
    """Check every configured backend and report problems in plain words (exit 1 if any)."""
    s = state().settings
    problems: list[str] = []
    notes: list[str] = []
    _, from_file = master_box(s)
    if from_file:
        notes.append(
            f"master keys come from {key_file(s.data_dir)}; move them to a secret manager and set "
            "CERTPORTAL_MASTER_KEYS (see README, Operations)"
        )
    p = state().pipeline
    problems.extend(_exposed_files(s.data_dir))
    if profile_round_trips(s.crypto.pkcs12_profile, s.crypto.pkcs12_kdf_rounds):
        notes.append(f"PKCS#12 profile {s.crypto.pkcs12_profile}: a test bundle opens intact")
    else:
        problems.append(f"PKCS#12 profile {s.crypto.pkcs12_profile}: a test bundle does not reopen intact")
    for what, backend in (("CA", p.ca), ("vault", p.vault), ("directory", p.directory)):
        try:
            found = backend.check()
        except Exception as exc:  # doctor reports every backend, it never stops at the first
            found = [f"{what} {backend.name}: check crashed: {type(exc).__name__}: {exc}"]
        problems.extend(found)
        notes.extend(getattr(backend, "describe", list)())
        if not found:
            notes.append(f"{what} backend {backend.name}: ok")
    for job in p.store.all("SELECT request_id, last_error FROM jobs WHERE state = 'parked'"):
        problems.append(f"request {job['request_id']} is parked for reconciliation: {job['last_error']}")
    report = p.audit.verify()
    if not report.ok:
        problems.extend(f"audit: {x}" for x in report.problems)
    for line in notes:
        click.echo(f"ok: {line}")
    for line in problems:
        click.echo(f"PROBLEM: {line}")
    if problems:
        fail(f"{len(problems)} problem(s) found")
    click.echo("all checks passed")


# Files that open or hold secrets: readable by the service's user only.
_PRIVATE_FILES = {
    "certportal.db": "the database",
    "master.keys": "the master key file",
    "audit.anchor": "the audit anchor",
    "ca/ca.db": "the embedded CA's key store",
    "vault/vault.db": "the local vault",
}


def _exposed_files(data_dir: Path) -> list[str]:
    found = []
    for name, what in _PRIVATE_FILES.items():
        path = data_dir / name
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                found.append(f"{what} {path} is readable by others (mode {mode:o}); chmod 600 it")
    return found


@click.command()
@click.argument("request_id")
@click.option("--order-id", default=None, help="The order found at the CA for this request.")
@click.option("--no-order", is_flag=True, help="Confirm the CA holds no order for it: order afresh.")
def reconcile(request_id: str, order_id: str | None, no_order: bool) -> None:
    """Resume a request parked because its CA order could not be looked up."""
    if bool(order_id) == no_order:
        fail("give exactly one of --order-id or --no-order", 2)
    p = state().pipeline
    request = get_request(p, request_id)
    job = p.store.one("SELECT state FROM jobs WHERE request_id = ? AND kind = 'provision'", (request_id,))
    if not job or job["state"] != "parked":
        fail(f"request {request_id} is not parked")
    now = p.clock.now()
    with p.store.write() as conn:
        if order_id:
            conn.execute("UPDATE work SET order_id = ? WHERE request_id = ?", (order_id, request_id))
        else:
            conn.execute("UPDATE work SET order_intent_at = NULL WHERE request_id = ?", (request_id,))
        enqueue(conn, request_id=request_id, kind="provision", step="wait" if order_id else "order", now=now)
        p.audit.append(
            conn,
            actor=actor(),
            action="request.reconciled",
            subject=request["mailbox"],
            request=request_id,
            order=order_id or "none",
        )
    p.audit.anchor_latest()
    click.echo(f"request {request_id} resumes; run `certportal worker` or let the service pick it up")


COMMANDS = [worker, audit, keys, doctor, reconcile]
