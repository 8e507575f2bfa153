"""Provisioning throughput on the embedded CA next to key generation alone (DESIGN.md, Performance budget).

Issues N approved requests through the worker with ``[worker] threads`` = --threads
and generates N keys of the same type on as many threads; prints both rates and
their ratio. Both sides run in interleaved rounds, so load drifting on a shared
machine affects them alike. With --profile it also prints where the worker's
time went, per step and for the suspected GIL holders inside the steps. A
benchmark, not a test.

    python bench/throughput.py [-n 100] [--threads 2] [--key rsa-3072] [--rounds 4] [--profile]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a file, a script's own folder comes first on sys.path, and there bench/queue.py
# would hide the standard library's queue module: put the repository root there instead.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import importlib
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.fernet import Fernet

from bot.wiring import build_pipeline
from pipeline import audit, provision
from pipeline.context import Pipeline
from pipeline.crypto.keys import generate_key
from pipeline.drive import run_until_settled
from pipeline.requests import create_request
from pipeline.settings import KEY_TYPES, load_settings
from pipeline.store.db import Store
from pipeline.worker import Worker


class QuietNotifier:
    """Notifications go nowhere: the benchmark measures issuance, not Slack."""

    def send(self, *, notification: Any) -> None:
        return None


# Calls inside steps that hold the GIL or wait on I/O: (module, attribute, label, step it runs in).
SUSPECTS = [
    ("integrations.ca.local", "lint_certificate", "pkilint before issuance (embedded CA)", "order"),
    ("pipeline.verify", "lint_certificate", "pkilint again (remembered by TBS)", "verify"),
    ("pipeline.verify", "self_test", "S/MIME sign + encrypt/decrypt self-test", "verify"),
    ("pipeline.provision", "build_pfx", "PKCS#12 build (KDF rounds)", "bundle"),
]
JOB, ANCHOR, LOCK = "job", "audit anchor file (open, flock, fsync)", "SQLite write lock (BEGIN IMMEDIATE)"


class Profile:
    """Wall and thread-CPU seconds per label, summed over all worker threads."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, label: str, wall_start: float, cpu_start: float) -> None:
        with self._lock:
            self.wall[label] += time.perf_counter() - wall_start
            self.cpu[label] += time.thread_time() - cpu_start

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(label, wall, cpu)

        return timed

    def wrap_write(self) -> None:
        """Time how long ``Store.write`` waits to get SQLite's write lock."""
        original = Store.write

        @contextlib.contextmanager
        def write(store: Store) -> Iterator[Any]:
            wall, cpu = time.perf_counter(), time.thread_time()
            with original(store) as conn:
                self.add(LOCK, wall, cpu)
                yield conn

        Store.write = write  # type: ignore[method-assign]

    def install(self) -> None:
        for step, fn in list(provision.STEP_FUNCTIONS.items()):
            provision.STEP_FUNCTIONS[step] = self.wrap(step, fn)
        Worker.run_job = self.wrap(JOB, Worker.run_job)  # type: ignore[method-assign]
        audit.AuditLog._anchor = self.wrap(ANCHOR, audit.AuditLog._anchor)  # type: ignore[method-assign]
        self.wrap_write()
        for module, name, label, _ in SUSPECTS:
            owner = importlib.import_module(module)
            setattr(owner, name, self.wrap(label, getattr(owner, name)))

    def report(self, elapsed: float, threads: int, count: int, keygen: float) -> None:
        budget = elapsed * threads
        steps = sum(self.wall[s] for s in provision.STEPS), sum(self.cpu[s] for s in provision.STEPS)
        job = self.wall[JOB], self.cpu[JOB]
        rows = [("jobs", job)]
        for step in provision.STEPS:
            rows.append((f"  {step}", (self.wall[step], self.cpu[step])))
            rows += [(f"    {label}", (self.wall[label], self.cpu[label])) for _, _, label, s in SUSPECTS if s == step]
        rows.append(("  between steps (SQLite, audit)", (job[0] - steps[0], job[1] - steps[1])))
        rows.append(("outside jobs (claims, idle polls, batch tail)", (budget - job[0], 0.0)))
        overlapping = [(f"  {label}", (self.wall[label], self.cpu[label])) for label in (ANCHOR, LOCK)]
        print(f"\nwhere the worker threads' time went ({threads} threads x {elapsed:.2f} s):")
        print(f"  {'':46s} {'share':>6s} {'ms/cert':>8s} {'cpu ms/cert':>12s}")
        for label, times in [*rows, ("included in the above:", None), *overlapping]:
            if times is None:
                print(f"  {label}")
                continue
            wall, cpu = times
            print(f"  {label:46s} {wall / budget:6.1%} {wall / count * 1000:8.1f} {cpu / count * 1000:12.1f}")
        # RSA keys differ widely in how long they take, so the ratio above also says which side drew
        # the slower keys; pricing the pipeline's keys at the keygen-only rate takes that luck out.
        per_key, rest = keygen * threads / count, (budget - self.wall["key"]) / count
        print(
            f"ratio with keys priced at the keygen-only rate ({per_key * 1000:.0f} ms/key/thread): "
            f"{per_key / (per_key + rest):.2f}"
        )


def keygen_seconds(count: int, threads: int, key_type: str) -> tuple[float, float]:
    """Wall and process-CPU seconds to generate ``count`` keys on ``threads`` threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: generate_key(key_type), range(count)))
    return time.perf_counter() - wall, time.process_time() - cpu


def make_pipeline(data_dir: str, threads: int, key_type: str) -> Pipeline:
    env = {
        "CERTPORTAL_DATA_DIR": data_dir,
        "CERTPORTAL_MASTER_KEYS": Fernet.generate_key().decode(),
        "CERTPORTAL__WORKER__THREADS": str(threads),
        "CERTPORTAL__CRYPTO__KEY_TYPE": key_type,
    }
    return build_pipeline(load_settings(None, env), notifier=QuietNotifier())


def issue(p: Pipeline, mailboxes: list[str]) -> tuple[float, float]:
    """Create approved requests in bulk, then time (wall and process CPU) the worker until all of them settle."""
    ids = [create_request(p, mailbox=m, requested_by="bench", approved=True)["id"] for m in mailboxes]
    wall, cpu = time.perf_counter(), time.process_time()
    states = run_until_settled(p, ids, timeout=None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if any(state != "issued" for state in states.values()):
        raise SystemExit(f"not every request was issued: {sorted(set(states.values()))}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=100, help="certificates to issue (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="worker and key generation threads (default 2)")
    parser.add_argument("--key", choices=KEY_TYPES, default="rsa-3072", help="key type (default rsa-3072)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved worker and keygen runs (default 4)")
    parser.add_argument("--profile", action="store_true", help="print where the worker's time went")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"{args.count} x {args.key}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load:.2f}")
    rounds = max(1, min(args.rounds, args.count))
    sizes = [args.count // rounds + (i < args.count % rounds) for i in range(rounds)]
    total = {"issue": [0.0, 0.0], "keygen": [0.0, 0.0]}  # wall and CPU seconds
    with tempfile.TemporaryDirectory(prefix="certportal-bench-") as data_dir:
        p = make_pipeline(data_dir, args.threads, args.key)
        issue(p, ["warmup@example.com"])  # creates the CA and pkilint's validators outside the timing
        profile = Profile()
        if args.profile:
            profile.install()
        # Alternating which side goes first spreads a machine's changing load over both sides.
        for i, size in enumerate(sizes):
            for side in ("keygen", "issue") if i % 2 == 0 else ("issue", "keygen"):
                if side == "issue":
                    wall, cpu = issue(p, [f"bench{i}-{j}@example.com" for j in range(size)])
                else:
                    wall, cpu = keygen_seconds(size, args.threads, args.key)
                total[side][0] += wall
                total[side][1] += cpu

    (elapsed, cpu), (keygen, keygen_cpu) = total["issue"], total["keygen"]
    certs, keys = args.count / elapsed, args.count / keygen
    print(f"certificates/s={certs:.2f}  keygen-only/s={keys:.2f}  ratio={certs / keys:.2f}  (target >= 0.9)")
    cert_ms, key_ms = cpu / args.count * 1000, keygen_cpu / args.count * 1000
    print(f"cpu ms/certificate={cert_ms:.0f}  cpu ms/key={key_ms:.0f}  cpu ratio={key_ms / cert_ms:.2f}")
    if args.profile:
        profile.report(elapsed, args.threads, args.count, keygen)


if __name__ == "__main__":
    main()
