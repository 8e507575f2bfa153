"""The pure rules behind the Slack surface: who may decide, who may hold a certificate, what a body must hold."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from bot.slack.approvers import decision_refusal
from bot.slack.blocks import escape
from bot.slack.payloads import MalformedRequest, parse
from bot.slack.profile import SlackProfile, from_user, mailbox_for
from pipeline.clock import iso
from pipeline.errors import PolicyError
from pipeline.settings import PolicySettings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def request(**overrides):
    row = {
        "id": "r1",
        "state": "pending_approval",
        "slack_user_id": "U0ALICE",
        "requested_by": "U0ALICE",
        "approver": None,
        "expires_at": iso(NOW + timedelta(days=1)),
    }
    return row | overrides


@pytest.mark.parametrize(
    "user, row, is_approver, expected",
    [
        ("U0IVAN", request(), True, None),
        ("U0IVAN", request(), False, "Only CertPortal approvers"),
        ("U0ALICE", request(), True, "your own request"),
        ("U0ALICE", request(slack_user_id="", requested_by="U0ALICE"), True, "your own request"),
        ("U0IVAN", request(state="approved", approver="U0IRENE"), True, "approved by <@U0IRENE>"),
        ("U0IVAN", request(state="provisioning", approver="U0IRENE"), True, "approved by <@U0IRENE>"),
        ("U0IVAN", request(state="denied", approver="U0IRENE"), True, "denied by <@U0IRENE>"),
        ("U0IVAN", request(state="cancelled"), True, "cancelled by the requester"),
        ("U0IVAN", request(state="expired"), True, "left to expire"),
        ("U0IVAN", request(state="approved", approver="policy:auto_approve_renewals"), True, "it was approved."),
        ("U0IVAN", request(expires_at=iso(NOW)), True, "has expired"),
        ("U0IVAN", request(expires_at=None), True, None),
        ("U0ALICE", request(state="approved"), False, "Only CertPortal approvers"),
    ],
)
def test_who_may_decide_what(user, row, is_approver, expected):
    refusal = decision_refusal(user_id=user, request=row, is_approver=is_approver, now=NOW)
    assert refusal is None if expected is None else expected in refusal


def profile(**overrides) -> SlackProfile:
    return dataclasses.replace(SlackProfile(user_id="U1", email="Alice@Example.com"), **overrides)


@pytest.mark.parametrize(
    "account, policy, outcome",
    [
        (profile(), {}, "alice@example.com"),
        (profile(is_guest=True), {}, "Guest accounts"),
        (profile(is_guest=True), {"allow_guests": True}, "alice@example.com"),
        (profile(is_bot=True), {}, "Bots"),
        (profile(is_bot=True), {"allow_bots": True}, "alice@example.com"),
        (profile(deleted=True), {}, "deactivated"),
        (profile(deleted=True), {"allow_deactivated": True}, "alice@example.com"),
        (profile(email=""), {}, "no email address"),
        (profile(email="alice@example.org"), {}, "not in a domain CertPortal issues for (example.com)"),
        (profile(email="alice@sub.example.com"), {}, "not in a domain"),
        (profile(email="alice@example.org"), {"allowed_domains": ["example.com", "example.org"]}, "alice@example.org"),
    ],
)
def test_which_accounts_may_hold_a_certificate(account, policy, outcome):
    settings = PolicySettings(**policy)
    if "@" in outcome:
        assert mailbox_for(account, settings) == outcome
    else:
        with pytest.raises(PolicyError, match=outcome.replace("(", r"\(").replace(")", r"\)")):
            mailbox_for(account, settings)


def test_profile_from_users_info_including_guests_and_real_name_only():
    guest = from_user({"id": "U1", "is_ultra_restricted": True, "profile": {"email": "g@example.com"}})
    assert guest.is_guest and guest.email == "g@example.com"
    named = from_user({"id": "U2", "profile": {"real_name": "Ada King Lovelace", "email": "a@example.com"}})
    assert (named.first_name, named.last_name) == ("Ada", "King Lovelace")
    app_user = from_user({"id": "U3", "is_app_user": True, "profile": {}})
    assert app_user.is_bot and app_user.email == ""


def test_typed_text_cannot_mention_or_link():
    assert escape("hi <!channel> &lt;@U1&gt; <https://x|y>") == "hi &lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt;"


def test_bodies_are_parsed_by_kind():
    command = parse(urlencode({"command": "/smime", "user_id": "U1", "text": "request the payload word"}), "")
    assert command["text"] == "request the payload word", "a 'payload' in typed text is still a command"
    action = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "a", "value": "v"}]}
    assert parse(urlencode({"payload": json.dumps(action)}), "application/x-www-form-urlencoded") == action
    event = {"type": "event_callback", "event": {"type": "user_change", "user": {"id": "U1"}}}
    assert parse(json.dumps(event), "application/json; charset=utf-8") == event
    with pytest.raises(MalformedRequest):
        parse(urlencode({"payload": json.dumps({**action, "actions": [{"action_id": "a", "value": 5}]})}), "")
