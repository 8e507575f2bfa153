"""The worker: claims jobs with a lease and runs them through the state machine.

N threads share one process; key generation and signing release the GIL. A
heartbeat thread extends the leases of running jobs. Transient errors reschedule
with exponential backoff and jitter up to ``[worker] max_attempts``; permanent
ones fail the request with a reason meant for the employee.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from pipeline import provision
from pipeline.certificates import publish_certificate, revoke_certificate
from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError, NeedsReconciliation, PermanentFailure, RetryLater
from pipeline.ports import Notification, NotificationKind, RevocationReason
from pipeline.queue import Job, LeaseLost, Queue, backoff_delay
from pipeline.requests import FINAL_STATES, get_request

log = logging.getLogger("certportal.worker")


class Worker:
    def __init__(self, p: Pipeline, *, name: str | None = None) -> None:
        self.p = p
        self.ws = p.settings.worker
        self.queue = Queue(p.store, lease_seconds=self.ws.lease_seconds)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._active: dict[int, str] = {}
        self._lock = threading.Lock()

    # -- loops --------------------------------------------------------------
    def run_once(self, owner: str | None = None, *, keep_going: Callable[[], bool] | None = None) -> bool:
        """Claim and run one job; False when nothing was runnable.

        With ``keep_going``, a job that finishes leases the next one in its final
        commit for as long as ``keep_going()`` is true.
        """
        owner = owner or f"{self.name}:{threading.get_ident()}"
        job = self.queue.claim(owner, self.p.clock.now())
        if job is None:
            return False
        while job is not None:
            current = job
            with self._lock:
                self._active[current.id] = owner
            try:
                job = self.run_job(current, chain=keep_going is not None and keep_going())
            except LeaseLost:
                log.warning("job %s was taken over by another worker", current.id)
                job = None
            finally:
                with self._lock:
                    self._active.pop(current.id, None)
        return True

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> None:
        """Run ``[worker] threads`` threads until ``stop`` is set or ``until()`` is true."""
        done = threading.Event()

        def loop(index: int) -> None:
            owner = f"{self.name}:{index}"
            while not stop.is_set() and not done.is_set():
                worked = self.run_once(owner, keep_going=lambda: not (stop.is_set() or done.is_set()))
                if until is not None and until():
                    done.set()
                elif not worked:
                    # Waiting on ``done`` lets the last thread to finish wake the idle
                    # ones at once; ``stop`` is noticed within one idle poll.
                    done.wait(self.ws.idle_poll_seconds)

        beat = threading.Thread(target=self._heartbeat, args=(stop, done), daemon=True)
        beat.start()
        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(self.ws.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()

    def _heartbeat(self, stop: threading.Event, done: threading.Event) -> None:
        while not (stop.wait(self.ws.heartbeat_seconds) or done.is_set()):
            with self._lock:
                by_owner: dict[str, list[int]] = {}
                for job_id, owner in self._active.items():
                    by_owner.setdefault(owner, []).append(job_id)
            for owner, ids in by_owner.items():
                self.queue.heartbeat(ids, owner, self.p.clock.now())

    # -- one job ------------------------------------------------------------
    def run_job(self, job: Job, *, chain: bool = False) -> Job | None:
        """Run ``job`` as far as it goes now; with ``chain``, finishing it leases and returns the next job."""
        if job.kind == "publish":
            self._run_publish(job)
            return None
        if job.kind == "cancel":
            self._run_cancel(job)
            return None
        if job.kind == "revoke":
            self._run_revoke(job)
            return None
        request = get_request(self.p, job.request_id)
        if request["state"] in FINAL_STATES:
            self._finish(job, "done")
            return None
        self._start(request)
        step = job.step
        next_job = None
        while step != "done":
            request = get_request(self.p, job.request_id)
            if request["state"] == "cancelled":
                self._finish(job, "done")
                return None
            work = self._work(job.request_id)
            self.p.hook(f"before:{step}")
            try:
                updates = provision.STEP_FUNCTIONS[step](self.p, request, work)
            except provision.Reschedule as exc:
                self.queue.reschedule(job, delay=exc.delay, now=self.p.clock.now(), failed=False)
                return None
            except NeedsReconciliation as exc:
                self._park(job, request, exc)
                return None
            except PermanentFailure as exc:
                self._fail(job, request, exc.user_reason, exc.admin_detail)
                return None
            except RetryLater as exc:
                self._retry(job, request, exc.admin_detail, exc.delay)
                return None
            except CertPortalError as exc:
                self._fail(job, request, "Something went wrong; IT has been told.", f"{type(exc).__name__}: {exc}")
                return None
            except Exception as exc:  # a bug or an unforeseen library error: retry, then fail
                log.exception("step %s of request %s failed", step, job.request_id)
                self._retry(job, request, f"{step}: unexpected {type(exc).__name__}", None)
                return None
            following = provision.next_step(step)
            in_tx = updates.pop(provision.IN_TRANSACTION, None)
            with self.p.store.write() as conn:
                self.queue.advance(conn, job, following, self.p.clock.now())
                provision.write_work(conn, job.request_id, updates, iso(self.p.clock.now()))
                if in_tx is not None:
                    in_tx(conn)
                if following == "done":
                    self.queue.finish(conn, job, "done", self.p.clock.now())
                    # Lease this thread's next job in the same commit: one commit per job.
                    if chain:
                        next_job = self.queue.claim_in(conn, job.lease_owner, self.p.clock.now())
            self.p.audit.anchor_latest()
            self.p.hook(f"after:{step}")
            step = following
        return next_job

    def _work(self, request_id: str) -> dict[str, Any]:
        row = self.p.store.one("SELECT * FROM work WHERE request_id = ?", (request_id,))
        if row is None:
            provision.save_work(self.p, request_id, {})
            row = self.p.store.one("SELECT * FROM work WHERE request_id = ?", (request_id,))
        assert row is not None
        return row

    def _start(self, request: dict[str, Any]) -> None:
        with self.p.store.write() as conn:
            moved = conn.execute(
                "UPDATE requests SET state = 'provisioning', updated_at = ? WHERE id = ? AND state = 'approved'",
                (iso(self.p.clock.now()), request["id"]),
            ).rowcount
        if moved:
            self._tell(
                request,
                NotificationKind.PROVISIONING,
                f"Your S/MIME certificate for {request['mailbox']} is being issued.",
            )

    def _retry(self, job: Job, request: dict[str, Any], detail: str, delay: float | None) -> None:
        if job.attempts + 1 >= self.ws.max_attempts:
            self._fail(
                job,
                request,
                "The certificate service could not be reached for too long; IT has been told.",
                f"gave up after {job.attempts + 1} attempts: {detail}",
            )
            return
        wait = (
            delay
            if delay is not None
            else backoff_delay(job.attempts, self.ws.backoff_base_seconds, self.ws.backoff_max_seconds)
        )
        self.queue.reschedule(job, delay=wait, now=self.p.clock.now(), error=detail, failed=True)

    def _fail(self, job: Job, request: dict[str, Any], user_reason: str, admin_detail: str) -> None:
        now = iso(self.p.clock.now())
        with self.p.store.write() as conn:
            # An issued request stays issued: a failure after issuance (notify) is not the employee's loss.
            failed = conn.execute(
                "UPDATE requests SET state = 'failed', failure_reason = ?, admin_detail = ?, updated_at = ? "
                "WHERE id = ? AND state NOT IN ('issued', 'cancelled')",
                (user_reason, admin_detail[:2000], now, request["id"]),
            ).rowcount
            self.queue.finish(conn, job, "failed", self.p.clock.now(), admin_detail)
            self.p.audit.append(
                conn,
                actor="worker",
                action="request.failed",
                subject=request["mailbox"],
                request=request["id"],
                reason=user_reason,
                detail=admin_detail[:500],
            )
        self.p.audit.anchor_latest()
        if failed:
            self._tell(
                request,
                NotificationKind.REQUEST_FAILED,
                f"Your S/MIME certificate for {request['mailbox']} could not be issued: {user_reason}",
                admin_detail=admin_detail[:500],
            )

    def _park(self, job: Job, request: dict[str, Any], exc: NeedsReconciliation) -> None:
        with self.p.store.write() as conn:
            conn.execute("UPDATE requests SET admin_detail = ? WHERE id = ?", (exc.admin_detail[:2000], request["id"]))
            self.queue.finish(conn, job, "parked", self.p.clock.now(), exc.admin_detail)
            self.p.audit.append(
                conn,
                actor="worker",
                action="request.parked",
                subject=request["mailbox"],
                request=request["id"],
                detail=exc.admin_detail[:500],
            )
        self.p.audit.anchor_latest()
        self._tell(request, NotificationKind.NEEDS_RECONCILIATION, exc.admin_detail)

    def _run_publish(self, job: Job) -> None:
        row = self.p.store.one("SELECT serial FROM certificates WHERE request_id = ?", (job.request_id,))
        if row is None:
            self._finish(job, "done")
            return
        try:
            publish_certificate(self.p, serial=row["serial"], background_on_failure=False)
        except CertPortalError as exc:
            detail = getattr(exc, "admin_detail", str(exc))
            attempts = job.attempts + 1
            if attempts == self.ws.publish_alert_after:
                self.p.notifier.send(
                    notification=Notification(
                        kind=NotificationKind.PUBLISH_FAILING,
                        serial=row["serial"],
                        text=f"Publishing certificate {row['serial']} to the directory keeps failing "
                        f"({attempts} attempts): {detail}. It is retried in the background; "
                        "`certportal publish` retries now.",
                    )
                )
            if attempts >= self.ws.publish_max_attempts:
                self._finish(job, "failed", detail)
                return
            delay = backoff_delay(job.attempts, self.ws.backoff_base_seconds, self.ws.backoff_max_seconds)
            self.queue.reschedule(job, delay=delay, now=self.p.clock.now(), error=detail, failed=True)
            return
        self._finish(job, "done")

    def _run_revoke(self, job: Job) -> None:
        args = json.loads(job.payload)
        try:
            revoke_certificate(
                self.p,
                serial=args["serial"],
                reason=RevocationReason(args["reason"]),
                actor=args.get("actor", "worker"),
                origin=args.get("origin", ""),
            )
        except RetryLater as exc:
            if job.attempts + 1 >= self.ws.max_attempts:
                self._finish(job, "failed", exc.admin_detail)
                self.p.notifier.send(
                    notification=Notification(
                        kind=NotificationKind.ADMIN_NOTICE,
                        serial=args["serial"],
                        text=f"Revoking certificate {args['serial']} keeps failing: {exc.admin_detail}. "
                        "Run `certportal revoke` once the CA is reachable.",
                    )
                )
                return
            delay = exc.delay or backoff_delay(job.attempts, self.ws.backoff_base_seconds, self.ws.backoff_max_seconds)
            self.queue.reschedule(job, delay=delay, now=self.p.clock.now(), error=exc.admin_detail, failed=True)
            return
        except CertPortalError as exc:
            self._finish(job, "failed", str(exc))
            return
        self._finish(job, "done")

    def _run_cancel(self, job: Job) -> None:
        row = self.p.store.one("SELECT order_id FROM work WHERE request_id = ?", (job.request_id,))
        try:
            if row and row["order_id"]:
                self.p.ca.cancel(order_id=row["order_id"])
        except RetryLater as exc:
            self.queue.reschedule(
                job,
                delay=backoff_delay(job.attempts, self.ws.backoff_base_seconds, self.ws.backoff_max_seconds),
                now=self.p.clock.now(),
                error=exc.admin_detail,
                failed=True,
            )
            return
        except CertPortalError as exc:
            self._finish(job, "failed", str(exc))
            return
        self._finish(job, "done")

    def _finish(self, job: Job, state: str, error: str = "") -> None:
        with self.p.store.write() as conn:
            self.queue.finish(conn, job, state, self.p.clock.now(), error)

    def _tell(self, request: dict[str, Any], kind: NotificationKind, text: str, **extra: str) -> None:
        # Best effort: the request's state is already saved; a lost DM must not undo it.
        try:
            provision.tell(self.p, request, kind, text, extra=dict(extra))
        except CertPortalError:
            log.warning("could not deliver a %s notification for request %s", kind, request["id"])
