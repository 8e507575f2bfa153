"""One scheduler pass that finds nothing due, at 1,000 and at 100,000 certificates (DESIGN.md, Performance budget).

Both databases are filled directly (``executemany``) with a realistic mix:
current certificates whose notAfter is spread over the year but outside every
reminder and auto-renew window, superseded ones kept as history, expired and
revoked ones, and one issued request per certificate. Passes on the two sizes
are timed alternately in the same run, so load drifting on a shared machine
affects both alike; prints the median of each and their ratio. The target is a
ratio of at most 2: a pass costs what is due, not how many certificates exist.
A benchmark, not a test.

    python bench/scan.py [--small 1000] [--large 100000] [--passes 15]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a file, a script's own folder comes first on sys.path, and there bench/queue.py
# would hide the standard library's queue module: put the repository root there instead.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import random
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet

from bot.wiring import build_pipeline
from pipeline.clock import FakeClock, iso
from pipeline.context import Pipeline
from pipeline.lifecycle.scheduler import run_pass
from pipeline.settings import load_settings

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
OWNER = "bench"


class QuietNotifier:
    def send(self, *, notification: Any) -> None:
        raise AssertionError(f"nothing should be due, but the pass sent {notification.kind}")


def build(folder: Path) -> Pipeline:
    env = {
        "CERTPORTAL_DATA_DIR": str(folder),
        "CERTPORTAL_MASTER_KEYS": Fernet.generate_key().decode(),
        "CERTPORTAL__LIFECYCLE__AUTO_RENEW_DAYS": "14",
    }
    return build_pipeline(load_settings(None, env), notifier=QuietNotifier(), clock=FakeClock(NOW))


def fill(p: Pipeline, count: int, rng: random.Random) -> None:
    """``count`` certificates and their requests; nothing within 30 days of expiry is current."""
    certificates: list[tuple[Any, ...]] = []
    requests: list[tuple[Any, ...]] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.80:  # current, expiring 45 to 400 days from now
            status, not_after = "active", NOW + timedelta(days=rng.uniform(45, 400))
        elif roll < 0.90:  # history: renewed early, still valid
            status, not_after = "superseded", NOW + timedelta(days=rng.uniform(1, 300))
        elif roll < 0.96:
            status, not_after = "expired", NOW - timedelta(days=rng.uniform(1, 700))
        else:
            status, not_after = "revoked", NOW + timedelta(days=rng.uniform(-300, 300))
        not_before = not_after - timedelta(days=365)
        request_id = f"r{i:07d}"
        mailbox = f"user{i}@example.com"
        stamp = iso(not_before)
        requests.append(
            (request_id, "new", mailbox, "cli:bench", "ec-p256", "bulk", "issued", "cli:bench", stamp, stamp, stamp)
        )
        certificates.append(
            (
                secrets.token_hex(16),
                request_id,
                mailbox,
                "ec-p256",
                "CN=Bench",
                "local",
                f"lca-{i}",
                stamp,
                iso(not_after),
                secrets.token_hex(32),
                "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
                "local",
                f"vault-{i}",
                status,
                "published",
                stamp,
                stamp,
            )
        )
    with p.store.write() as conn:
        conn.executemany(
            "INSERT INTO requests (id, kind, mailbox, requested_by, key_type, source, state, approver, "
            "decided_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            requests,
        )
        conn.executemany(
            "INSERT INTO certificates (serial, request_id, mailbox, key_type, issuer, ca_backend, order_id, "
            "not_before, not_after, sha256, cert_pem, vault_backend, vault_ref, status, publish_state, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            certificates,
        )


def one_pass(p: Pipeline) -> float:
    started = time.perf_counter()
    report = run_pass(p, owner=OWNER)
    elapsed = time.perf_counter() - started
    assert report is not None and not report.errors, report
    busy = (report.requests_expired, report.certificates_expired, report.renewals, report.reminders_recorded)
    assert busy == (0, 0, 0, 0), f"something was due: {report}"
    return elapsed


def _scan_all(p: Pipeline) -> float:
    started = time.perf_counter()
    p.store.conn.execute("SELECT serial, not_after FROM certificates WHERE status = 'active'").fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(20260601)
    with tempfile.TemporaryDirectory(prefix="certportal-scan-") as tmp:
        sizes = (args.small, args.large)
        pipelines = {}
        for size in sizes:
            started = time.perf_counter()
            p = build(Path(tmp) / f"n{size}")
            fill(p, size, rng)
            pipelines[size] = p
            one_pass(p)  # warm up: the embedded CA's keys and first CRL, caches
            print(f"filled {size:>9,} certificates in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(args.passes):
            for size in sizes:
                times[size].append(one_pass(pipelines[size]))
        medians = {size: statistics.median(times[size]) for size in sizes}
        print(f"scheduler pass with nothing due (median of {args.passes} passes each, alternated):")
        for size in sizes:
            best = min(times[size])
            print(f"  {size:>9,} certificates: {medians[size] * 1000:8.2f} ms  (fastest {best * 1000:.2f} ms)")
        ratio = medians[args.large] / medians[args.small]
        verdict = "within" if ratio <= 2 else "OVER"
        print(f"  ratio {args.large:,} / {args.small:,}: {ratio:.2f} ({verdict} the target of 2)")
        # For contrast, what reading every current certificate (a scan that ignores what is due) costs.
        scans = {size: _scan_all(pipelines[size]) for size in sizes}
        print(
            f"for contrast, reading every current certificate: {scans[args.small] * 1000:.2f} ms vs "
            f"{scans[args.large] * 1000:.2f} ms (ratio {scans[args.large] / scans[args.small]:.0f})"
        )
        for p in pipelines.values():
            p.store.close()


if __name__ == "__main__":
    main()
