"""``POST /slack/events``: verify Slack's signature, check the body's shape, then hand it to Bolt.

The signature (HMAC-SHA256 over ``v0:{timestamp}:{raw body}`` with the signing
secret, timestamp within five minutes) is checked here, before anything is
parsed; a forged or stale request gets 401 and changes nothing. A malformed body
gets 400. Bolt then receives the already verified and parsed body (its own
verification would only repeat ours), dispatched off the event loop so one slow
request never holds up another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio.to_thread
from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.slack.payloads import MalformedRequest, parse

log = logging.getLogger("certportal.web.slack")
MAX_BODY_BYTES = 1_000_000
MAX_SKEW_SECONDS = 300


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackEndpoint:
    def __init__(self, app: App, *, signing_secret: str, now: Callable[[], float] = time.time) -> None:
        if not signing_secret:
            raise ValueError("the Slack endpoint needs SLACK_SIGNING_SECRET")
        self.app = app
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(now))

    async def handle(self, request: Request) -> Response:
        raw = await _bounded_body(request)
        if raw is None:
            return _error(413, "request too large")
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8")
        if not (timestamp.isascii() and timestamp.isdigit()) or not self.verifier.is_valid(text, timestamp, signature):
            log.warning("refused a Slack request with a missing, forged or stale signature")
            return _error(401, "invalid request")
        try:
            body = parse(text, request.headers.get("content-type", ""))
        except MalformedRequest as exc:
            log.warning("refused a malformed Slack request: %s", exc)
            return _error(400, str(exc))
        headers = {k: [v] for k, v in request.headers.items() if not k.startswith("x-slack-bolt-")}
        try:
            response = await anyio.to_thread.run_sync(self._dispatch, body, headers)
        except Exception:
            log.exception("Slack request could not be dispatched")
            return _error(400, "request could not be handled")
        if response.status >= 500:
            # A listener raised before acknowledging; the log has the traceback.
            return _error(400, "request could not be handled")
        return Response(
            content=response.body,
            status_code=response.status,
            headers=response.first_headers_without_set_cookie(),
        )

    def _dispatch(self, body: dict[str, object], headers: dict[str, list[str]]) -> BoltResponse:
        # The body is verified and parsed already; "socket_mode" tells Bolt to take it as it is.
        request = BoltRequest(body=body, headers=headers, mode="socket_mode")  # type: ignore[arg-type]
        return self.app.dispatch(request)


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_BODY_BYTES (Slack's requests are a few kilobytes)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
