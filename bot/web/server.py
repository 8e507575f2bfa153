"""Running the ASGI app with uvicorn: in the foreground (serve, demo) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

log = logging.getLogger("certportal.web")


def config(app: Any, *, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    # log_config=None leaves logging to bot.web.logs (JSON lines, link tokens redacted).
    # Proxy headers are trusted from loopback only (a reverse proxy on the same host).
    # loop/http "auto" pick uvloop and httptools (dependencies) over asyncio and h11: a
    # fraction of the per-request CPU, which is what Slack's acks wait on under load.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=log_level.lower(),
        access_log=True,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority (threads it starts inherit it).

    On Linux a thread's nice value is its own, so background work (key generation,
    the slow half of Slack handlers) yields the CPU to the threads that answer
    HTTP. Elsewhere this does nothing.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError) as exc:
        log.debug("could not lower a thread's CPU priority: %s", exc)


class Server(uvicorn.Server):
    """uvicorn that returns after SIGINT/SIGTERM instead of re-raising the signal, so the caller can
    stop the worker cleanly (finish the current step) before the process exits."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class ThreadedServer:
    """uvicorn in a background thread, for tests and benchmarks: ``with ThreadedServer(app) as s: s.url``."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.server = Server(config(app, host=host, port=port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
