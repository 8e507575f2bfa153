"""Claim-and-complete throughput of no-op jobs: our lease queue next to huey's SqliteHuey, in one run.

Both queues get N no-op jobs in a fresh SQLite file (WAL) and are drained by the
same number of threads. Ours claims with a lease (``Queue.claim``) and completes
as the worker does: the finishing commit checks the lease, marks the job done and
leases the thread's next job (``Queue.complete``), keeping every row; huey dequeues (deleting the row) and executes the task. Only
the draining is timed. huey is a benchmark-only dependency (``pip install
.[bench]``). A benchmark, not a test.

    python bench/queue.py [-n 5000] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a file, a script's own folder comes first on sys.path, and there bench/queue.py
# would hide the standard library's queue module: put the repository root there instead.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from huey import SqliteHuey

from pipeline.queue import Queue, enqueue
from pipeline.store.db import Store


def drain(threads: int, work_one: Callable[[int], bool]) -> float:
    """Run ``work_one(thread_index)`` on each thread until it returns False; the wall seconds taken."""

    def loop(index: int) -> None:
        while work_one(index):
            pass

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return time.perf_counter() - start


def ours(folder: Path, count: int, threads: int) -> float:
    store = Store(folder / "certportal.db").open()
    with store.write() as conn:
        for i in range(count):
            enqueue(conn, request_id=f"bench-{i}", kind="provision", step="noop", now=datetime.now(UTC))
    queue = Queue(store, lease_seconds=120)

    def claim_and_complete(index: int) -> bool:
        job = queue.claim(f"bench:{index}", datetime.now(UTC))
        if job is None:
            return False
        while job is not None:
            job = queue.complete(job, datetime.now(UTC))
        return True

    elapsed = drain(threads, claim_and_complete)
    done, claims = store.conn.execute("SELECT count(*), sum(claims) FROM jobs WHERE state = 'done'").fetchone()
    if done != count or claims != count:
        raise SystemExit(f"our queue completed {done} of {count} jobs with {claims} claims")
    return elapsed


def huey(folder: Path, count: int, threads: int, synchronous: str) -> float:
    h = SqliteHuey("bench", filename=str(folder / "huey.db"))
    if synchronous:  # huey shares one connection between threads, so one pragma covers them all
        h.storage.conn.execute(f"PRAGMA synchronous = {synchronous}")
    done: list[int] = []

    @h.task()
    def noop() -> None:
        done.append(1)

    for _ in range(count):
        noop()

    def dequeue_and_execute(index: int) -> bool:
        task = h.dequeue()
        if task is None:
            return False
        h.execute(task)
        return True

    elapsed = drain(threads, dequeue_and_execute)
    if len(done) != count:
        raise SystemExit(f"huey ran {len(done)} of {count} tasks")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=5000, help="no-op jobs per queue and round (default 5000)")
    parser.add_argument("--threads", type=int, default=2, help="draining threads per queue (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the best of each is kept (default 3)"
    )
    args = parser.parse_args()

    # Our store commits with synchronous=NORMAL (WAL: no fsync per commit). huey's default
    # leaves SQLite's FULL (an fsync per commit); at NORMAL it is the like-for-like comparison.
    runs: dict[str, list[float]] = {"ours": [], "huey NORMAL": [], "huey default": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="certportal-bench-") as folder:
            runs["ours"].append(ours(Path(folder), args.count, args.threads))
        for name, synchronous in (("huey NORMAL", "NORMAL"), ("huey default", "")):
            with tempfile.TemporaryDirectory(prefix="certportal-bench-") as folder:
                runs[name].append(huey(Path(folder), args.count, args.threads, synchronous))
    rate = {name: args.count / min(seconds) for name, seconds in runs.items()}
    print(f"{args.count} no-op jobs, {args.threads} threads, best of {args.rounds} alternating rounds")
    print(f"ours jobs/s={rate['ours']:.0f}  (lease claim + complete, rows kept, synchronous=NORMAL)")
    ratio = rate["ours"] / rate["huey default"]
    print(f"huey default jobs/s={rate['huey default']:.0f}  ratio={ratio:.2f}  (SqliteHuey as shipped; target >= 2.0)")
    ratio = rate["ours"] / rate["huey NORMAL"]
    print(
        f"huey NORMAL  jobs/s={rate['huey NORMAL']:.0f}  ratio={ratio:.2f}  "
        "(huey tuned to our durability, synchronous=NORMAL; for reference)"
    )


if __name__ == "__main__":
    main()
