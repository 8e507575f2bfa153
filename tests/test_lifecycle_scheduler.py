"""Whole scheduler passes driven by a fake clock: exactly which notifications go out, and when."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from bot.console import ConsoleNotifier
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate, revoke_certificate
from pipeline.clock import parse_iso
from pipeline.drive import run_until_settled
from pipeline.errors import RetryLater
from pipeline.lifecycle.scheduler import run_pass
from pipeline.ports import Notification, NotificationKind, RevocationReason
from pipeline.requests import create_request, decide, get_request
from pipeline.worker import Worker
from tests.support.lifecycle import RecordingDirectory, issue

D = timedelta(days=1)
MINUTE = timedelta(minutes=1)
OWNER = "test-scheduler"


@pytest.fixture
def lc(make_settings, notifier, clock):
    """``lc(**settings)`` -> a pipeline on the fake clock that records notifications."""
    made = []

    def build(notify=None, **overrides):
        p = build_pipeline(make_settings(**overrides), notifier=notify or notifier, clock=clock)
        made.append(p)
        return p

    yield build
    for p in made:
        p.store.close()


def reminders(notifier):
    return [(n.mailbox, int(n.extra["threshold_days"])) for n in notifier.sent if n.kind == NotificationKind.REMINDER]


def kinds(notifier, kind):
    return [n for n in notifier.sent if n.kind == kind]


def ledger(p, serial):
    rows = p.store.all("SELECT threshold_days, sent FROM reminders WHERE serial = ?", (serial,))
    return {r["threshold_days"]: r["sent"] for r in rows}


def test_reminders_follow_the_thresholds_once_each_and_catch_up_once_after_downtime(lc, notifier, clock):
    p = lc()
    alice = issue(p, "alice@example.com", slack_user_id="UALICE")
    bob = issue(p, "bob@example.com")  # issued from the CLI: the Slack notifier looks the owner up by email
    not_after = parse_iso(alice["not_after"])
    assert run_pass(p, owner=OWNER).reminders_sent == 0

    clock.set(not_after - 30 * D + MINUTE)
    report = run_pass(p, owner=OWNER)
    assert (report.reminders_sent, report.reminders_recorded) == (2, 2)
    assert reminders(notifier) == [("alice@example.com", 30), ("bob@example.com", 30)]
    first = kinds(notifier, NotificationKind.REMINDER)[0]
    assert (first.serial, first.slack_user_id, first.not_after) == (alice["serial"], "UALICE", not_after)
    assert f"expires on {not_after:%Y-%m-%d} at {not_after:%H:%M} UTC (in 30 days)" in first.text
    assert kinds(notifier, NotificationKind.REMINDER)[1].slack_user_id == ""

    clock.advance(MINUTE)
    run_pass(p, owner=OWNER)
    clock.set(not_after - 13 * D)
    run_pass(p, owner=OWNER)
    assert reminders(notifier)[2:] == [("alice@example.com", 14), ("bob@example.com", 14)]

    # Down from 13 days before expiry until 12 hours before: one reminder each, the most urgent.
    clock.set(not_after - 12 * timedelta(hours=1))
    report = run_pass(p, owner=OWNER)
    assert (report.reminders_sent, report.reminders_recorded) == (2, 4)
    assert reminders(notifier)[4:] == [("alice@example.com", 1), ("bob@example.com", 1)]
    assert "(in less than a day)" in kinds(notifier, NotificationKind.REMINDER)[-1].text
    assert ledger(p, alice["serial"]) == {30: 1, 14: 1, 7: 0, 1: 1}

    clock.set(not_after + MINUTE)
    report = run_pass(p, owner=OWNER)
    assert report.certificates_expired == 2
    assert report.reminders_sent == 0
    assert len(reminders(notifier)) == 6
    assert {c["status"] for c in p.store.all("SELECT status FROM certificates")} == {"expired"}
    assert ledger(p, bob["serial"]) == {30: 1, 14: 1, 7: 0, 1: 1}


def test_revoked_renewed_and_renewing_certificates_are_not_reminded(lc, notifier, clock):
    p = lc()
    carol = issue(p, "carol@example.com")
    dave = issue(p, "dave@example.com")
    erin = issue(p, "erin@example.com")
    not_after = parse_iso(carol["not_after"])
    clock.set(not_after - 20 * D)
    revoke_certificate(p, serial=carol["serial"], reason=RevocationReason.KEY_COMPROMISE, actor="cli:test")
    renewal = create_request(p, mailbox="dave@example.com", requested_by="UDAVE", kind="renew", source="slack")
    renewed = issue(p, "erin@example.com")
    assert get_request(p, renewal["id"])["state"] == "pending_approval"

    assert run_pass(p, owner=OWNER).reminders_sent == 0
    assert reminders(notifier) == []
    assert p.store.all("SELECT * FROM reminders") == []
    assert p.store.one("SELECT status FROM certificates WHERE serial = ?", (erin["serial"],))["status"] == "superseded"
    assert renewed["serial"] != erin["serial"]

    # The renewal was denied: nothing is pending any more, so dave is reminded after all.
    decide(p, request_id=renewal["id"], approver="UAPPROVER", approve=False, note="not now")
    clock.advance(MINUTE)
    run_pass(p, owner=OWNER)
    assert reminders(notifier) == [("dave@example.com", 30)]
    assert ledger(p, dave["serial"]) == {30: 1}


class FlakyNotifier(ConsoleNotifier):
    """Refuses the first ``failures`` reminders, as Slack does when it is down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, *, notification: Notification) -> None:
        if notification.kind == NotificationKind.REMINDER and self.failures > 0:
            self.failures -= 1
            raise RetryLater("slack is down")
        super().send(notification=notification)


def test_an_undelivered_reminder_is_not_recorded_and_goes_out_next_pass(lc, clock):
    flaky = FlakyNotifier(failures=1)
    p = lc(notify=flaky)
    cert = issue(p, "frank@example.com")
    clock.set(parse_iso(cert["not_after"]) - 6 * D)
    report = run_pass(p, owner=OWNER)
    assert (report.reminders_sent, report.reminders_recorded) == (0, 0)
    assert ledger(p, cert["serial"]) == {}
    clock.advance(5 * MINUTE)
    report = run_pass(p, owner=OWNER)
    assert (report.reminders_sent, report.reminders_recorded) == (1, 3)
    assert reminders(flaky) == [("frank@example.com", 7)]


def test_auto_renewal_creates_one_approved_renewal_and_the_predecessor_stops_being_current(lc, notifier, clock):
    p = lc(**{"lifecycle.auto_renew_days": 10})
    old = issue(p, "gina@example.com", slack_user_id="UGINA")
    not_after = parse_iso(old["not_after"])
    clock.set(not_after - 11 * D)
    assert run_pass(p, owner=OWNER).renewals == 0
    assert reminders(notifier) == [("gina@example.com", 14)]  # outside the auto-renew window, people are reminded
    clock.set(not_after - 10 * D + MINUTE)
    report = run_pass(p, owner=OWNER)
    assert report.renewals == 1
    assert report.reminders_sent == 0
    renewal = p.store.one("SELECT * FROM requests WHERE kind = 'renew'")
    assert (renewal["state"], renewal["source"], renewal["predecessor_serial"]) == (
        "approved",
        "scheduler",
        old["serial"],
    )
    assert renewal["slack_user_id"] == "UGINA"
    assert run_until_settled(p, [renewal["id"]], timeout=60)[renewal["id"]] == "issued"
    clock.advance(MINUTE)
    report = run_pass(p, owner=OWNER)
    assert (report.renewals, report.reminders_sent) == (0, 0)
    assert p.store.one("SELECT status FROM certificates WHERE serial = ?", (old["serial"],))["status"] == "superseded"
    assert current_certificate(p, "gina@example.com")["serial"] != old["serial"]
    assert p.store.one("SELECT count(*) AS n FROM requests WHERE kind = 'renew'")["n"] == 1
    # The 7-day and 1-day reminders never come: the certificate they were about is superseded.
    clock.set(not_after - 12 * timedelta(hours=1))
    run_pass(p, owner=OWNER)
    assert reminders(notifier) == [("gina@example.com", 14)]


def test_auto_renewal_awaiting_approval_expires_once_and_reminders_resume(lc, notifier, clock):
    p = lc(**{"lifecycle.auto_renew_days": 10, "policy.auto_approve_renewals": False})
    cert = issue(p, "hana@example.com")
    not_after = parse_iso(cert["not_after"])
    clock.set(not_after - 10 * D)
    assert run_pass(p, owner=OWNER).renewals == 1
    submitted = kinds(notifier, NotificationKind.REQUEST_SUBMITTED)
    assert len(submitted) == 1 and "waiting for approval" in submitted[0].text
    clock.advance(MINUTE)
    assert run_pass(p, owner=OWNER).renewals == 0

    clock.advance(p.settings.policy.pending_days * D)
    report = run_pass(p, owner=OWNER)
    assert (report.requests_expired, report.renewals, report.reminders_sent) == (1, 0, 1)
    expired = kinds(notifier, NotificationKind.REQUEST_EXPIRED)
    assert len(expired) == 1 and expired[0].mailbox == "hana@example.com"
    # 30, 14 and 7 days were all crossed while the renewal waited: one reminder, the 7-day one.
    assert reminders(notifier) == [("hana@example.com", 7)]
    clock.advance(MINUTE)
    report = run_pass(p, owner=OWNER)
    assert (report.requests_expired, report.renewals, report.reminders_sent) == (0, 0, 0)


def test_pending_requests_expire_at_their_deadline_and_both_sides_are_told_once(lc, notifier, clock):
    p = lc()
    request = create_request(p, mailbox="ivan@example.com", requested_by="UIVAN", slack_user_id="UIVAN", source="slack")
    deadline = parse_iso(request["expires_at"])
    clock.set(deadline - MINUTE)
    assert run_pass(p, owner=OWNER).requests_expired == 0
    clock.set(deadline)
    assert run_pass(p, owner=OWNER).requests_expired == 1
    clock.advance(MINUTE)
    assert run_pass(p, owner=OWNER).requests_expired == 0
    (told,) = kinds(notifier, NotificationKind.REQUEST_EXPIRED)
    assert (told.request_id, told.slack_user_id, told.mailbox) == (request["id"], "UIVAN", "ivan@example.com")
    assert get_request(p, request["id"])["state"] == "expired"
    assert any(e["action"] == "request.expired" for e in p.audit.entries())
    # The mailbox is free for a new request.
    create_request(p, mailbox="ivan@example.com", requested_by="UIVAN", slack_user_id="UIVAN", source="slack")


def test_an_expired_certificate_is_marked_and_leaves_the_directory(lc, clock):
    p = lc()
    p.directory = RecordingDirectory()
    cert = issue(p, "jo@example.com")
    assert p.directory.values["jo@example.com"] == {cert["sha256"]}
    p.directory.values["jo@example.com"].add("f" * 64)  # another CA's certificate: never ours to remove
    clock.set(parse_iso(cert["not_after"]) - MINUTE)
    assert run_pass(p, owner=OWNER).certificates_expired == 0
    clock.set(parse_iso(cert["not_after"]))
    assert run_pass(p, owner=OWNER).certificates_expired == 1
    worker = Worker(p)
    while worker.run_once():
        pass
    assert p.directory.values["jo@example.com"] == {"f" * 64}
    row = p.store.one("SELECT status, publish_state FROM certificates WHERE serial = ?", (cert["serial"],))
    assert (row["status"], row["publish_state"]) == ("expired", "removed")
    assert current_certificate(p, "jo@example.com") is None


def test_the_embedded_crl_is_re_signed_before_its_next_update(lc, clock):
    p = lc(**{"ca.local.crl_validity_hours": 24})
    start = clock.now()
    assert run_pass(p, owner=OWNER).crl_refreshed  # the first CRL
    first = p.ca.crl()
    clock.advance(11 * timedelta(hours=1))
    assert not run_pass(p, owner=OWNER).crl_refreshed
    assert p.ca.crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
        first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    clock.advance(1 * timedelta(hours=1) + MINUTE)
    assert run_pass(p, owner=OWNER).crl_refreshed
    second = p.ca.crl()
    assert second.next_update_utc > first.next_update_utc
    assert second.last_update_utc >= (start + 12 * timedelta(hours=1)).replace(microsecond=0)
