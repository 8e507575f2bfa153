"""Crash tests: SIGKILL the process at every state-machine boundary and at random moments, then resume.

After a restart the request must complete with exactly one order at the CA, one
certificate, no working secrets left behind, an intact audit log, and an export whose
PFX opens with its stored password and holds a key that matches the certificate.

The ``issue`` runs that die are started together (each on its own data dir) before the
first test needs them; each test then resumes its own. ``[worker] lease_seconds`` is 2 so a
killed worker's job is claimable again quickly.
"""

from __future__ import annotations

import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from bot.wiring import build_pipeline
from pipeline.provision import idempotency_key
from pipeline.requests import create_request
from pipeline.settings import load_settings
from tests.support.core import (
    STEPS,
    ca_orders,
    cli,
    cli_in_process,
    core_env,
    db_rows,
    exports_in,
    key_matches,
    popen_cli,
    query,
    settle,
)

pytestmark = pytest.mark.slow

MAILBOX = "crash@example.com"
CRASH_SETTINGS = {"worker.lease_seconds": 2, "worker.heartbeat_seconds": 1}
POINTS = [
    point
    for step in STEPS
    for point in (f"before:{step}", *(["order:submitted"] if step == "order" else []), f"after:{step}")
]


@dataclass
class KilledRun:
    env: dict[str, str]
    marker: Path
    returncode: int
    stderr: str


def start_killed_issue(base: Path, point: str) -> KilledRun:
    marker = base / "crashed"
    env = core_env(base / "data", **CRASH_SETTINGS)
    env.update({"CERTPORTAL_CRASH_AT": point, "CERTPORTAL_CRASH_MARKER": str(marker)})
    result = cli(env, "issue", MAILBOX, "--key", "ec-p256", timeout=180)
    clean = {k: v for k, v in env.items() if not k.startswith("CERTPORTAL_CRASH")}
    return KilledRun(clean, marker, result.returncode, result.stderr)


@pytest.fixture(scope="module")
def killed_runs(request, tmp_path_factory) -> dict[str, KilledRun]:
    """Run the dying ``issue`` of every selected crash point, three at a time."""
    wanted = [
        item.callspec.params["point"]
        for item in request.session.items
        if item.originalname == "test_killed_at_a_step_boundary_the_request_completes_once"
        and hasattr(item, "callspec")
    ]
    bases = {point: tmp_path_factory.mktemp(point.replace(":", "-")) for point in wanted}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {point: pool.submit(start_killed_issue, bases[point], point) for point in wanted}
        return {point: f.result() for point, f in futures.items()}


def assert_issued_once(env: dict[str, str], mailboxes: list[str], out: Path) -> None:
    data_dir = Path(env["CERTPORTAL_DATA_DIR"])
    requests = db_rows(data_dir, "SELECT id, mailbox, state FROM requests")
    assert sorted(r["mailbox"] for r in requests) == sorted(mailboxes)
    assert {r["state"] for r in requests} == {"issued"}

    orders = ca_orders(data_dir)
    assert sorted(o["idempotency_key"] for o in orders) == sorted(idempotency_key(r["id"]) for r in requests), (
        "exactly one CA order per request"
    )
    assert {o["status"] for o in orders} == {"issued"}
    order_of = {o["idempotency_key"]: o for o in orders}

    certificates = db_rows(data_dir, "SELECT * FROM certificates")
    assert len(certificates) == len(mailboxes)
    for cert in certificates:
        order = order_of[idempotency_key(cert["request_id"])]
        assert (cert["order_id"], cert["serial"], cert["status"]) == (order["id"], order["serial"], "active")
    vaulted = query(data_dir / "vault" / "vault.db", "SELECT serial FROM secrets")
    assert sorted(v["serial"] for v in vaulted) == sorted(c["serial"] for c in certificates)
    leftovers = db_rows(data_dir, "SELECT * FROM work WHERE password_enc IS NOT NULL OR key_enc IS NOT NULL")
    assert leftovers == [], "working secrets must be wiped once the vault copy is verified"
    leftovers = db_rows(data_dir, "SELECT * FROM work WHERE pfx_enc IS NOT NULL")
    assert leftovers == []

    verify = cli_in_process(env, "audit", "verify")
    assert verify.exit_code == 0, verify.output

    for cert in certificates:
        folder = out / cert["mailbox"]
        exported = cli_in_process(env, "export", cert["mailbox"], "--out", str(folder), "--reason", "crash test")
        assert exported.exit_code == 0, exported.output
        (pair,) = exports_in(folder)
        p12 = pair.open()
        stored = x509.load_pem_x509_certificate(cert["cert_pem"].encode())
        assert p12.cert is not None and p12.cert.certificate == stored
        assert p12.key is not None and key_matches(stored, p12.key)


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_step_boundary_the_request_completes_once(killed_runs, point, tmp_path):
    run = killed_runs[point]
    assert run.returncode == -signal.SIGKILL, f"issue was not killed at {point}: {run.stderr}"
    assert run.marker.exists()
    states = settle(run.env)
    assert list(states.values()) == ["issued"], states
    assert_issued_once(run.env, [MAILBOX], tmp_path / "out")


def test_crash_points_cover_every_step_boundary():
    assert len(POINTS) == 2 * len(STEPS) + 1
    assert POINTS.index("before:order") < POINTS.index("order:submitted") < POINTS.index("after:order")


def create_approved_requests(env: dict[str, str], mailboxes: list[str]) -> None:
    p = build_pipeline(load_settings(None, env))
    try:
        for mailbox in mailboxes:
            create_request(p, mailbox=mailbox, requested_by="cli:crash-test", approved=True, approver="cli:crash-test")
    finally:
        p.store.close()


def running_claims(data_dir: Path) -> set[tuple[int, int]]:
    rows = db_rows(data_dir, "SELECT id, claims FROM jobs WHERE state = 'running'")
    return {(r["id"], r["claims"]) for r in rows}


def wait_until_working(data_dir: Path, pid: int, limit: float) -> bool:
    """Until this worker holds a lease (it is inside a step), or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        held = db_rows(data_dir, "SELECT count(*) AS n FROM jobs WHERE lease_owner LIKE ?", (f"%:{pid}:%",))
        if held[0]["n"]:
            return True
        time.sleep(0.01)
    return False


def test_worker_killed_at_random_moments_still_issues_each_request_once(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    # A slow CA keeps requests inside ``wait`` for a while, so kills also land between polls.
    env = core_env(data_dir, **CRASH_SETTINGS, **{"ca.local.issue_delay_seconds": 0.4})
    mailboxes = [f"user{i}@example.com" for i in range(4)]
    create_approved_requests(env, mailboxes)

    interrupted: set[tuple[int, int]] = set()
    for _ in range(5):
        worker = popen_cli(env, "worker")
        try:
            if not wait_until_working(data_dir, worker.pid, limit=20):
                break  # nothing left to claim
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL
        interrupted |= running_claims(data_dir)
    assert interrupted, f"no kill landed inside a job (seed {seed})"

    states = settle(env, timeout=120)
    assert set(states.values()) == {"issued"}, f"{states} (seed {seed})"
    assert_issued_once(env, mailboxes, tmp_path / "out")


def test_two_workers_share_the_queue_without_doing_anything_twice(tmp_path):
    data_dir = tmp_path / "data"
    env = core_env(data_dir, **CRASH_SETTINGS, **{"ca.local.issue_delay_seconds": 0.2})
    mailboxes = [f"team{i}@example.com" for i in range(6)]
    create_approved_requests(env, mailboxes)
    workers = [popen_cli(env, "worker") for _ in range(2)]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = {r["state"] for r in db_rows(data_dir, "SELECT state FROM requests")}
            if states == {"issued"}:
                break
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # finishes the current step, then exits
        codes = [worker.wait(timeout=30) for worker in workers]
    assert codes == [0, 0]
    owners = {r["lease_owner"] for r in db_rows(data_dir, "SELECT lease_owner FROM jobs")}
    assert owners == {None}  # nothing left leased
    assert_issued_once(env, mailboxes, tmp_path / "out")
