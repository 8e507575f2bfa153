"""The shared vendor HTTP client: what is retried, what is looked up, what is final."""

from __future__ import annotations

import socket

import pytest

from integrations.http import RetryPolicy, VendorClient
from pipeline.errors import OutcomeUnknown, PermanentFailure, RetryLater
from tests.fakes.server import FakeServer, Fault, Reply


@pytest.fixture
def server():
    fake = FakeServer()
    fake.route("GET", "/thing", lambda call, _: Reply(200, {"ok": True}))
    fake.route("POST", "/order", lambda call, _: Reply(201, {"id": 1}))
    with fake:
        yield fake


def client(url: str, sleeps: list[float] | None = None) -> VendorClient:
    policy = RetryPolicy(
        attempts=3, base_delay=0.01, max_delay=1.0, sleep=(sleeps if sleeps is not None else []).append
    )
    return VendorClient(vendor="Vendor", base_url=url, timeout=0.5, policy=policy)


def test_get_is_retried_through_5xx(server):
    server.fail_next(Fault(status=503), times=2)
    assert client(server.url).json("GET", "/thing") == {"ok": True}
    assert len(server.calls_to("GET", "/thing")) == 3


def test_a_5xx_on_a_post_is_an_unknown_outcome_and_is_not_repeated(server):
    server.fail_next(Fault(status=500))
    with pytest.raises(OutcomeUnknown):
        client(server.url).json("POST", "/order", json={})
    assert len(server.calls_to("POST", "/order")) == 1


def test_a_lost_response_to_a_post_is_an_unknown_outcome(server):
    server.fail_next(Fault(drop=True, after=True))
    with pytest.raises(OutcomeUnknown):
        client(server.url).json("POST", "/order", json={})
    assert len(server.calls_to("POST", "/order")) == 1


def test_a_post_that_never_connected_is_safe_to_retry_later():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryLater) as caught:
        client(f"http://127.0.0.1:{port}").json("POST", "/order", json={})
    assert not isinstance(caught.value, OutcomeUnknown)


def test_429_waits_as_long_as_retry_after_says(server):
    sleeps: list[float] = []
    server.fail_next(Fault(status=429, retry_after="0.5"))
    assert client(server.url, sleeps).json("GET", "/thing") == {"ok": True}
    assert sleeps == [0.5]


def test_a_4xx_is_final_and_keeps_the_vendors_message_for_admins_only(server):
    server.fail_next(Fault(status=400, body={"errors": [{"code": "invalid_csr", "message": "CSR is malformed"}]}))
    with pytest.raises(PermanentFailure) as caught:
        client(server.url).json("GET", "/thing")
    assert "CSR is malformed" in caught.value.admin_detail
    assert "CSR is malformed" not in caught.value.user_reason


def test_a_malformed_body_is_transient(server):
    server.fail_next(Fault(malformed=True))
    with pytest.raises(RetryLater):
        client(server.url).json("GET", "/thing")
