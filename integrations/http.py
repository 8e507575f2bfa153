"""Shared HTTP behaviour for vendor adapters: timeouts, retries with backoff, 429, error mapping.

Every call has a timeout. 5xx and connection errors are retried a few times with
exponential backoff and jitter; 429 honours ``Retry-After`` when sent, else the
adapter's documented default. What is still failing afterwards becomes
``RetryLater`` (the worker tries again later) or, for other 4xx, ``PermanentFailure``
with the vendor's own message kept for admins. On a non-idempotent call (a POST
unless the caller says otherwise) anything that may have reached the vendor -- a
timeout after sending, a dropped connection, a 5xx -- becomes ``OutcomeUnknown``
and is not retried here: the caller must look the result up rather than repeat it. Request and response bodies, headers and
credentials are never logged.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.errors import OutcomeUnknown, PermanentFailure, RetryLater

log = logging.getLogger(__name__)

# What an employee is told when a vendor refuses for good; the vendor's message
# goes to admins only.
GENERIC_USER_REASON = "The certificate service refused the request. IT has been told and will follow up."


@dataclass
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    default_retry_after: float = 5.0  # 429 without Retry-After
    sleep: Callable[[float], None] = field(default=time.sleep)

    def backoff(self, attempt: int) -> float:
        delay = min(self.max_delay, self.base_delay * (2**attempt))
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


def retry_after_seconds(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


class VendorClient:
    """A thin wrapper over ``httpx.Client`` that applies the policy above.

    ``describe_error`` turns an error response into the vendor's own message (kept
    for admins). ``vendor`` names the service in messages.
    """

    def __init__(
        self,
        *,
        vendor: str,
        base_url: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        verify: str | bool = True,
        policy: RetryPolicy | None = None,
        describe_error: Callable[[httpx.Response], str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.vendor = vendor
        self.policy = policy or RetryPolicy()
        self._describe = describe_error or _default_describe
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            timeout=timeout,
            headers=dict(headers or {}),
            verify=verify,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (),
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request and return a 2xx (or an ``ok``) response.

        Raises RetryLater, OutcomeUnknown (timeouts on non-idempotent calls), PermanentFailure.
        """
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE")
        url = path.lstrip("/")
        last: RetryLater | None = None
        for attempt in range(self.policy.attempts):
            try:
                response = self._client.request(method, url, headers=headers, **kwargs)
            except httpx.TimeoutException as exc:
                sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                if sent and not idempotent:
                    raise OutcomeUnknown(f"{self.vendor}: {method} {path} timed out after sending") from None
                last = RetryLater(f"{self.vendor}: {method} {path} timed out")
            except httpx.TransportError as exc:
                # Only a failure to connect proves the request never left; any other
                # transport error on a non-idempotent call may have taken effect.
                if not idempotent and not isinstance(exc, httpx.ConnectError):
                    raise OutcomeUnknown(f"{self.vendor}: connection lost during {method} {path}") from None
                last = RetryLater(f"{self.vendor}: cannot reach {path}: {type(exc).__name__}")
            else:
                if response.is_success or response.status_code in ok:
                    return response
                detail = f"{self.vendor} answered {response.status_code} to {method} {path}: {self._describe(response)}"
                if response.status_code == 429:
                    delay = retry_after_seconds(response, self.policy.default_retry_after)
                    last = RetryLater(detail, delay=delay)
                    if attempt + 1 < self.policy.attempts and delay <= self.policy.max_delay:
                        self.policy.sleep(delay)
                        continue
                    raise last
                if response.status_code >= 500:
                    if not idempotent:
                        # A 5xx may come after the vendor acted: look it up, never repeat blindly.
                        raise OutcomeUnknown(detail)
                    last = RetryLater(detail)
                else:
                    raise PermanentFailure(GENERIC_USER_REASON, admin_detail=detail)
            if attempt + 1 < self.policy.attempts:
                self.policy.sleep(self.policy.backoff(attempt))
        assert last is not None
        raise last

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like ``request`` but returns the decoded JSON body (None for an empty body).

        A malformed body is a transient vendor fault: raises RetryLater.
        """
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RetryLater(f"{self.vendor}: malformed JSON from {method} {path}") from None


def _default_describe(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body)[:500]
