"""A tiny loopback HTTP server for vendor fakes: routing, call recording and fault injection.

Fakes subclass ``FakeServer`` and register handlers with ``route``. Tests tell a
fake to misbehave with ``fail_next`` (status codes, malformed JSON, a delay longer
than the client's timeout, a dropped connection) or ``fail_rate`` (random failures
with a seeded generator), then read ``calls`` to see what the adapter sent.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> raw
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Fault:
    """One injected failure: ``status`` (e.g. 503, 429), ``malformed``, ``delay`` or ``drop``.

    ``after`` makes the fault happen after the real handler ran (the request took
    effect but the response is lost), which is how an "outcome unknown" is built.
    """

    status: int | None = None
    malformed: bool = False
    delay: float = 0.0
    drop: bool = False
    after: bool = False
    retry_after: str | None = None
    body: Any = None


Handler = Callable[[Call, dict[str, str]], Reply]


class FakeServer:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[tuple[re.Pattern[str] | None, Fault]] = []
        self._fail_rate = 0.0
        self._rate_fault = Fault(status=503)
        self._rng = random.Random(1)
        self.lock = threading.RLock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this, Nagle's
            # algorithm and delayed ACKs add ~40 ms to every call.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                server._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """``pattern`` is a regex over the path, with named groups passed to the handler."""
        self._routes.append((method.upper(), re.compile(pattern + r"\Z"), handler))

    def fail_next(self, fault: Fault, *, path: str | None = None, times: int = 1) -> None:
        with self.lock:
            for _ in range(times):
                self._faults.append((re.compile(path) if path else None, fault))

    def fail_rate(self, rate: float, fault: Fault | None = None, *, seed: int = 1) -> None:
        """Fail each call with probability ``rate`` (seeded, so runs repeat)."""
        with self.lock:
            self._fail_rate = rate
            self._rate_fault = fault or Fault(status=503)
            self._rng = random.Random(seed)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        rx = re.compile(pattern + r"\Z")
        return [c for c in self.calls if c.method == method.upper() and rx.match(c.path)]

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for i, (rx, fault) in enumerate(self._faults):
                if rx is None or rx.search(path):
                    del self._faults[i]
                    return fault
            if self._fail_rate and self._rng.random() < self._fail_rate:
                return self._rate_fault
        return None

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        call = Call(h.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.calls.append(call)
        fault = self._take_fault(parts.path)
        if fault and not fault.after and self._apply_fault(h, fault):
            return
        reply = self._route(call)
        if fault and fault.after and self._apply_fault(h, fault):
            return
        self._send(h, reply)

    def _route(self, call: Call) -> Reply:
        for method, rx, handler in self._routes:
            m = rx.match(call.path)
            if m and method == call.method:
                with self.lock:
                    return handler(call, m.groupdict())
        return Reply(404, {"error": "not found"})

    def _apply_fault(self, h: BaseHTTPRequestHandler, fault: Fault) -> bool:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            h.close_connection = True
            h.wfile.flush()
            h.connection.close()
            return True
        if fault.malformed:
            self._send(h, Reply(200, b'{"truncated": '))
            return True
        if fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body if fault.body is not None else {"error": f"injected {fault.status}"}
            self._send(h, Reply(fault.status, body, headers))
            return True
        return False

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
        elif reply.body is None:
            payload = b""
        else:
            payload = json.dumps(reply.body).encode()
        h.send_response(reply.status)
        h.send_header("Content-Type", reply.content_type)
        h.send_header("Content-Length", str(len(payload)))
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)
