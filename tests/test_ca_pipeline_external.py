"""The whole pipeline against the DigiCert and Sectigo fakes: issuance, a crash mid-order, a faulty CA.

Configuration goes through settings and the environment exactly as an operator's
would (``ca.backend``, the vendor section, credentials from the environment,
``[ca] trust_anchors`` naming the test CA's root), and the fakes issue real
certificates, so verify, bundle and vault run for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.console import ConsoleNotifier
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.clock import FakeClock
from pipeline.context import Pipeline
from pipeline.drive import run_until_settled
from pipeline.ports import NotificationKind
from pipeline.provision import idempotency_key
from pipeline.requests import create_request, get_request
from pipeline.settings import Settings
from pipeline.worker import Worker
from tests.fakes.digicert import FakeDigiCert, VendorFake
from tests.fakes.sectigo import FakeSectigo
from tests.fakes.server import Fault
from tests.support.testca import TestCA

TEST_CA = TestCA.create()
MARKER = "certportal-order-key:"


@pytest.fixture(params=["digicert", "sectigo"])
def vendor(request: pytest.FixtureRequest, tmp_path: Path, base_env: dict[str, str]) -> Iterator[VendorFake]:
    """A running fake, with ``base_env`` pointing CertPortal at it."""
    anchor = tmp_path / "vendor-root.pem"
    anchor.write_bytes(TEST_CA.root_pem)
    base_env.update({"CERTPORTAL__CA__BACKEND": request.param, "CERTPORTAL__CA__TRUST_ANCHORS": str(anchor)})
    fake: VendorFake
    if request.param == "digicert":
        fake = FakeDigiCert(TEST_CA)
        fake.limiter.limits = [(100_000, 5.0)]
        base_env.update(
            {
                "CERTPORTAL__CA__DIGICERT__BASE_URL": fake.url + "/services/v2",
                "CERTPORTAL__CA__DIGICERT__ORGANIZATION_ID": "123456",
                "CERTPORTAL__CA__DIGICERT__TIMEOUT_SECONDS": "2",
                "DIGICERT_API_KEY": fake.api_key,
            }
        )
    else:
        fake = FakeSectigo(TEST_CA)
        base_env.update(
            {
                "CERTPORTAL__CA__SECTIGO__BASE_URL": fake.url + "/api",
                "CERTPORTAL__CA__SECTIGO__CUSTOMER_URI": fake.customer_uri,
                "CERTPORTAL__CA__SECTIGO__ORG_ID": "4321",
                "CERTPORTAL__CA__SECTIGO__CERT_TYPE": "5678",
                "CERTPORTAL__CA__SECTIGO__TIMEOUT_SECONDS": "2",
                "SECTIGO_LOGIN": fake.login,
                "SECTIGO_PASSWORD": fake.password,
            }
        )
    with fake:
        yield fake


def orders_per_marker(fake: VendorFake) -> dict[str, int]:
    assert isinstance(fake, FakeDigiCert | FakeSectigo)
    return dict(fake.orders_per_marker())


def request_for(p: Pipeline, mailbox: str) -> dict[str, Any]:
    return create_request(
        p, mailbox=mailbox, requested_by="test", first_name="Alice", last_name="Example", approved=True, approver="test"
    )


def test_a_request_is_issued_end_to_end_through_the_vendor(
    vendor: VendorFake, make_settings: Callable[..., Settings], notifier: ConsoleNotifier
) -> None:
    p = build_pipeline(make_settings(), notifier=notifier)
    try:
        assert p.ca.name in ("digicert", "sectigo") and p.ca.check() == []
        request = request_for(p, "alice@example.com")
        assert run_until_settled(p, [request["id"]], timeout=30)[request["id"]] == "issued"
        cert = current_certificate(p, "alice@example.com")
        assert cert is not None and cert["status"] == "active"
        assert orders_per_marker(vendor) == {MARKER + idempotency_key(request["id"]): 1}
        assert NotificationKind.CERTIFICATE_READY in [n.kind for n in notifier.sent]
    finally:
        p.store.close()


@pytest.mark.parametrize("vendor", ["digicert"], indirect=True)
def test_unanswered_mailbox_validation_reminds_then_fails_and_cancels_the_order(
    vendor: VendorFake, make_settings: Callable[..., Settings], notifier: ConsoleNotifier, clock: FakeClock
) -> None:
    assert isinstance(vendor, FakeDigiCert)
    vendor.require_validation = True
    p = build_pipeline(make_settings(**{"ca.pending_days": 7}), notifier=notifier, clock=clock)
    try:
        request = request_for(p, "alice@example.com")
        worker = Worker(p)
        for _ in range(40):
            worker.run_once()
            clock.advance(timedelta(hours=12))
            if get_request(p, request["id"])["state"] == "failed":
                break
        told = [n for n in notifier.sent if n.kind is NotificationKind.AWAITING_VALIDATION]
        assert len(told) == 2 and "validation email" in told[0].text and told[1].text.startswith("Reminder")
        failed = get_request(p, request["id"])
        assert failed["state"] == "failed" and "7 days" in failed["failure_reason"]
        assert [o.status for o in vendor.orders.values()] == ["canceled"]
    finally:
        p.store.close()


def test_a_worker_killed_between_order_and_saving_its_id_never_orders_twice(
    vendor: VendorFake,
    make_settings: Callable[..., Settings],
    notifier: ConsoleNotifier,
    run_cli: Callable[..., Any],
    base_env: dict[str, str],
) -> None:
    crashed = run_cli(
        "issue",
        "alice@example.com",
        "--first-name",
        "Alice",
        "--last-name",
        "Example",
        env={
            "CERTPORTAL_CRASH_AT": "order:submitted",
            "CERTPORTAL__WORKER__LEASE_SECONDS": "1",
            "CERTPORTAL__WORKER__HEARTBEAT_SECONDS": "0.5",
        },
    )
    assert crashed.returncode == -9, crashed.stderr
    assert sum(orders_per_marker(vendor).values()) == 1  # the CA took the order; we never saved its id

    p = build_pipeline(make_settings(), notifier=notifier)  # the restart
    try:
        (row,) = p.store.all("SELECT id FROM requests")
        outcome = run_until_settled(p, [row["id"]], timeout=30)[row["id"]]
        if isinstance(vendor, FakeSectigo):
            # Lookup is off by default for Sectigo: parked for an admin, who finds the order in SCM.
            assert outcome == "parked"
            assert NotificationKind.NEEDS_RECONCILIATION in [n.kind for n in notifier.sent]
            (order_id,) = vendor.enrollments
            run_cli("reconcile", row["id"], "--order-id", str(order_id), check=True)
            outcome = run_until_settled(p, [row["id"]], timeout=30)[row["id"]]
        assert outcome == "issued"
        assert orders_per_marker(vendor) == {MARKER + idempotency_key(row["id"]): 1}
    finally:
        p.store.close()


FAULTS = [
    Fault(status=500),
    Fault(status=503),
    Fault(status=429, retry_after="0.05"),
    Fault(delay=0.45, after=True),  # the client times out; the call may have taken effect
    Fault(drop=True, after=True),  # the call took effect, the answer is lost
    Fault(malformed=True),
]


@pytest.mark.slow
def test_fifty_requests_against_a_ca_failing_thirty_percent_of_calls(
    vendor: VendorFake,
    make_settings: Callable[..., Settings],
    notifier: ConsoleNotifier,
    base_env: dict[str, str],
) -> None:
    name = "digicert" if isinstance(vendor, FakeDigiCert) else "sectigo"
    settings = make_settings(
        **{
            f"ca.{name}.timeout_seconds": 0.3,
            "ca.sectigo.order_lookup": True,  # what makes unknown outcomes resolvable without an admin
            "worker.threads": 4,
            "worker.max_attempts": 10,
            "worker.backoff_max_seconds": 2,
        }
    )
    p = build_pipeline(settings, notifier=notifier)
    try:
        mailboxes = [f"user{i:02d}@example.com" for i in range(50)]
        refused = set(mailboxes[::10])  # the CA turns five of them down for good
        vendor.refuse_mailboxes = refused
        ids = [request_for(p, mailbox)["id"] for mailbox in mailboxes]
        vendor.fail_mix(0.30, FAULTS, seed=11)
        outcomes = run_until_settled(p, ids, timeout=150)
        vendor.fail_mix(0.0, [])

        issued = [i for i in ids if outcomes[i] == "issued"]
        failed = [i for i in ids if outcomes[i] == "failed"]
        per_marker = orders_per_marker(vendor)
        print(
            f"\nfault test ({name}): {len(issued)} issued, {len(failed)} failed, {sum(per_marker.values())} orders "
            f"for 50 requests, {len(vendor.calls)} CA calls, injected {dict(vendor.injected)}"
        )
        assert len(issued) + len(failed) == 50, {i: outcomes[i] for i in ids if i not in issued + failed}
        assert all(n == 1 for n in per_marker.values()), "a request was ordered twice"
        for request_id in issued:
            assert per_marker.get(MARKER + idempotency_key(request_id)) == 1
        secret = base_env.get("DIGICERT_API_KEY") or base_env["SECTIGO_PASSWORD"]
        for request_id in failed:
            request = get_request(p, request_id)
            assert request["failure_reason"] and secret not in request["failure_reason"] + request["admin_detail"]
        refused_ids = {i for i, mailbox in zip(ids, mailboxes, strict=True) if mailbox in refused}
        assert refused_ids <= set(failed), "a refused order must fail the request"
        vendor_name = {"digicert": "DigiCert", "sectigo": "Sectigo"}[name]
        assert all(get_request(p, i)["failure_reason"].startswith(f"{vendor_name} refused") for i in refused_ids)
        assert len(issued) >= 40, "transient faults must not sink requests the CA accepts"
    finally:
        p.store.close()
