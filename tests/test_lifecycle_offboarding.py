"""Offboarding: a deactivated Slack user's certificates are revoked once, however often the event comes."""

from __future__ import annotations

from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.clock import parse_iso
from pipeline.drive import run_until_settled
from pipeline.lifecycle.offboarding import offboard
from pipeline.lifecycle.renewal import request_renewal
from pipeline.ports import NotificationKind
from pipeline.requests import create_request, get_request
from pipeline.worker import Worker
from tests.support.lifecycle import RecordingDirectory, issue


def drain(p):
    worker = Worker(p)
    while worker.run_once():
        pass


def offboarded(notifier):
    return [n for n in notifier.sent if n.kind == NotificationKind.OFFBOARDED]


def test_offboarding_revokes_every_unexpired_certificate_once_and_a_replay_does_nothing(pipeline, notifier):
    p = pipeline
    p.directory = RecordingDirectory()
    first = issue(p, "alice@example.com", slack_user_id="UALICE")
    renewal = request_renewal(p, mailbox="alice@example.com", requested_by="UALICE", source="slack")
    run_until_settled(p, [renewal["id"]], timeout=60)
    second = current_certificate(p, "alice@example.com")
    bob = issue(p, "bob@example.com", slack_user_id="UBOB")
    pending = create_request(
        p, mailbox="alice@example.com", requested_by="UALICE", slack_user_id="UALICE", kind="renew"
    )

    assert offboard(p, slack_user_id="UALICE", actor="slack:user_change") == 2
    assert offboard(p, slack_user_id="UALICE", actor="slack:user_change") == 0  # replayed before the worker ran
    (notice,) = offboarded(notifier)
    assert notice.slack_user_id == "UALICE"
    assert first["serial"] in notice.text and second["serial"] in notice.text
    assert "affiliationChanged" in notice.text and "archived" in notice.text
    assert get_request(p, pending["id"])["state"] == "cancelled"

    drain(p)
    rows = p.store.all("SELECT serial, status, revocation_reason FROM certificates WHERE mailbox = 'alice@example.com'")
    assert {(r["serial"], r["status"], r["revocation_reason"]) for r in rows} == {
        (first["serial"], "revoked", "affiliationChanged"),
        (second["serial"], "revoked", "affiliationChanged"),
    }
    assert p.directory.values["alice@example.com"] == set()
    assert p.directory.values["bob@example.com"] == {bob["sha256"]}
    assert current_certificate(p, "bob@example.com")["status"] == "active"
    # Revoked at the CA: both serials are on the embedded CA's CRL.
    on_crl = {format(entry.serial_number, "x") for entry in p.ca.crl()}
    assert {first["serial"], second["serial"]} <= on_crl
    # Keys stay archived for recovery of old mail.
    assert p.vault.retrieve(ref=first["vault_ref"], reason="test").pfx

    assert offboard(p, slack_user_id="UALICE", actor="slack:user_change") == 0  # replayed after the worker ran
    assert len(offboarded(notifier)) == 1
    requested = [e for e in p.audit.entries() if e["action"] == "certificate.revocation_requested"]
    assert len(requested) == 2
    revoked = [n for n in notifier.sent if n.kind == NotificationKind.REVOKED]
    assert len(revoked) == 2


def test_certificates_issued_outside_slack_are_found_by_mailbox(pipeline, notifier):
    p = pipeline
    cert = issue(p, "carol@example.com")  # bulk or CLI: no Slack user id recorded
    assert offboard(p, slack_user_id="UCAROL", actor="slack:user_change") == 0
    assert offboarded(notifier) == []
    assert offboard(p, slack_user_id="UCAROL", actor="slack:user_change", mailbox="Carol@Example.com") == 1
    drain(p)
    assert p.store.one("SELECT status FROM certificates WHERE serial = ?", (cert["serial"],))["status"] == "revoked"


def test_expired_certificates_are_left_alone(make_settings, notifier, clock):
    p = build_pipeline(make_settings(), notifier=notifier, clock=clock)
    try:
        cert = issue(p, "dan@example.com", slack_user_id="UDAN")
        clock.set(parse_iso(cert["not_after"]))
        assert offboard(p, slack_user_id="UDAN", actor="slack:user_change") == 0
        assert offboarded(notifier) == []
        assert p.store.one("SELECT count(*) AS n FROM jobs WHERE kind = 'revoke'")["n"] == 0
    finally:
        p.store.close()
