"""Scheduler passes on a fake clock, delivered through the Slack notifier to the fake Slack Web API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.slack.app import build_notifier
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.clock import parse_iso
from pipeline.drive import run_until_settled
from pipeline.lifecycle.scheduler import run_pass
from pipeline.requests import create_request
from tests.fakes.slack_api import button_texts
from tests.support.slack import REQUESTER, service_settings, standard_slack

CLI_USER = "U0CLIUSER"


@pytest.fixture
def slack_pipeline(base_env, clock):
    slack = standard_slack()
    slack.add_user(CLI_USER, "bob@example.com", first="Bob", last="Builder")
    settings = service_settings(base_env, slack)
    notifier = build_notifier(settings)
    p = build_pipeline(settings, notifier=notifier, clock=clock)
    notifier.attach(p)
    try:
        yield p, slack
    finally:
        p.store.close()
        slack.stop()


def issue(p, mailbox, slack_user_id=""):
    r = create_request(
        p, mailbox=mailbox, requested_by="cli:test", approved=True, approver="cli:test", slack_user_id=slack_user_id
    )
    assert run_until_settled(p, [r["id"]], timeout=60)[r["id"]] == "issued"
    return current_certificate(p, mailbox)


def reminder_dms(slack):
    return [
        m
        for (channel, _), m in sorted(slack.messages.items(), key=lambda item: item[0][1])
        if channel.startswith("D") and any("Renew" in t for t in button_texts(m["blocks"]))
    ]


def test_reminder_dms_carry_a_renew_button_and_reach_owners_issued_outside_slack(slack_pipeline, clock):
    p, slack = slack_pipeline
    alice = issue(p, "alice@example.com", slack_user_id=REQUESTER)  # asked in Slack
    issue(p, "bob@example.com")  # issued from the CLI: found by users.lookupByEmail
    issue(p, "nobody@example.com")  # no Slack account at all: nothing to deliver, nothing breaks
    not_after = parse_iso(alice["not_after"])

    clock.set(not_after - timedelta(days=6))
    report = run_pass(p, owner="test")
    assert report is not None and not report.errors
    dms = reminder_dms(slack)
    assert sorted(m["channel"] for m in dms) == sorted([f"D{REQUESTER}", f"D{CLI_USER}"])
    for message in dms:
        assert f"expires on {not_after:%Y-%m-%d}" in message["text"]
        assert "(in 6 days)" in message["text"]
    looked_up = [c.get("email") for c in slack.api_calls("users.lookupByEmail")]
    assert "bob@example.com" in looked_up and "nobody@example.com" in looked_up

    # Later passes in the same window send nothing more; the next threshold sends exactly one more each.
    clock.advance(timedelta(hours=1))
    run_pass(p, owner="test")
    assert len(reminder_dms(slack)) == 2
    clock.set(not_after - timedelta(hours=20))
    run_pass(p, owner="test")
    dms = reminder_dms(slack)
    assert len(dms) == 4
    assert all("(in less than a day)" in m["text"] for m in dms[2:])
