"""Approvals: only approvers decide, never their own request, exactly once, and the message says who did."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bot.slack.blocks import APPROVE, DENY
from bot.slack.views import DENY_VIEW
from tests.fakes.slack_api import buttons
from tests.support.slack import (
    APPROVER,
    APPROVER2,
    CHANNEL,
    OUTSIDER,
    REQUESTER,
    SlackService,
    block_actions_body,
    running_service,
    sign,
    wait_for,
)


@pytest.fixture
def svc(base_env):
    # No worker: these tests are about decisions, not issuance.
    with running_service(base_env, worker=False) as service:
        yield service


def submit(svc: SlackService, user: str = REQUESTER) -> tuple[str, dict]:
    svc.command("request please", user=user)
    message = wait_for(lambda: svc.slack.channel_messages(CHANNEL), what="approvals message")[-1]
    return buttons(message["blocks"])[0]["value"], message


def decisions(svc: SlackService, request_id: str) -> list[dict]:
    return [
        e
        for e in svc.p.audit.entries()
        if e["action"] in ("request.approved", "request.denied") and e["subject"] == request_id
    ]


def test_a_non_approver_click_changes_nothing_and_is_told_why(svc):
    request_id, message = submit(svc)
    svc.click(APPROVE, request_id, user=OUTSIDER, name="outsider")
    assert "Only CertPortal approvers" in svc.reply_text("outsider")
    assert svc.replies("outsider")[-1]["response_type"] == "ephemeral"
    assert svc.p.store.one("SELECT state FROM requests WHERE id = ?", (request_id,))["state"] == "pending_approval"
    assert svc.slack.messages[(CHANNEL, message["ts"])]["updates"] == 0


def test_nobody_approves_their_own_request(svc):
    request_id, _ = submit(svc, user=APPROVER)
    svc.click(APPROVE, request_id, user=APPROVER, name="self")
    assert "your own request" in svc.reply_text("self")
    assert svc.p.store.one("SELECT state FROM requests WHERE id = ?", (request_id,))["state"] == "pending_approval"
    assert decisions(svc, request_id) == []


def test_two_approvers_at_once_a_double_click_and_a_replay_decide_exactly_once(svc):
    request_id, _ = submit(svc)
    bodies = [
        block_actions_body(APPROVE, request_id, user_id=user, response_url=svc.slack.response_url(f"race{i}"))
        for i, user in enumerate([APPROVER, APPROVER2, APPROVER, APPROVER2])
    ]
    signed = [(b, sign(b)) for b in bodies]
    signed.append(signed[0])  # a replay of the very same signed request
    start = threading.Barrier(len(signed))
    statuses: list[int] = []

    def send(body: str, headers: dict[str, str]) -> None:
        start.wait()
        response = svc.http.post(
            svc.url + "/slack/events",
            content=body,
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=pair) for pair in signed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(signed)

    def race_replies() -> list[str]:
        return [e["text"] for e in svc.slack.ephemerals if e.get("name", "").startswith("race")]

    wait_for(lambda: len(race_replies()) >= len(signed) - 1, what="replies to the losers")
    assert len(decisions(svc, request_id)) == 1, race_replies()
    assert svc.p.store.one("SELECT COUNT(*) AS n FROM jobs WHERE request_id = ?", (request_id,))["n"] == 1
    winner = svc.p.store.one("SELECT approver FROM requests WHERE id = ?", (request_id,))["approver"]
    losers = race_replies()
    assert len(losers) == len(signed) - 1
    assert all("no longer pending" in t and f"<@{winner}>" in t for t in losers)

    def approved_dms() -> list[str]:
        return [t for t in svc.slack.dm_texts(REQUESTER) if "approved" in t]

    wait_for(approved_dms, what="the requester's DM")
    time.sleep(0.2)  # a second decision, if there were one, would have told them by now
    assert len(approved_dms()) == 1


def test_deny_asks_for_a_reason_and_tells_the_requester(svc):
    request_id, message = submit(svc)
    svc.click(DENY, request_id, user=APPROVER, name="deny")
    modal = wait_for(lambda: svc.slack.views_opened, what="the deny modal")[-1]
    assert modal["callback_id"] == DENY_VIEW
    assert svc.p.store.one("SELECT state FROM requests WHERE id = ?", (request_id,))["state"] == "pending_approval"

    empty = svc.submit(
        DENY_VIEW,
        user=APPROVER,
        private_metadata=modal["private_metadata"],
        values={"reason": {"reason": {"type": "plain_text_input", "value": "  "}}},
    )
    assert empty.json()["response_action"] == "errors"

    svc.submit(
        DENY_VIEW,
        user=APPROVER,
        private_metadata=modal["private_metadata"],
        values={"reason": {"reason": {"type": "plain_text_input", "value": "Use the shared mailbox <!channel>"}}},
    )
    wait_for(lambda: svc.slack.dm_texts(REQUESTER), what="the denial DM")
    assert "denied" in svc.slack.dm_texts(REQUESTER)[-1] and "shared mailbox" in svc.slack.dm_texts(REQUESTER)[-1]
    updated = wait_for(
        lambda: svc.slack.messages[(CHANNEL, message["ts"])]["updates"] and svc.slack.messages[(CHANNEL, message["ts"])]
    )
    assert not buttons(updated["blocks"])
    text = json.dumps(updated["blocks"])
    assert f"Denied by <@{APPROVER}>" in text and "<!date^" in text
    assert "<!channel>" not in text, "a typed reason cannot ping the channel"


def test_approver_group_members_may_decide(base_env):
    with running_service(base_env, worker=False, **{"slack.approvers": "[]", "slack.approver_group": "S0PKI"}) as svc:
        svc.slack.usergroups["S0PKI"] = [APPROVER2]
        request_id, _ = submit(svc)
        svc.click(APPROVE, request_id, user=APPROVER, name="not-member")
        assert "Only CertPortal approvers" in svc.reply_text("not-member")
        svc.click(APPROVE, request_id, user=APPROVER2, name="member")
        wait_for(lambda: decisions(svc, request_id), what="the group member's approval")
        assert len(svc.slack.api_calls("usergroups.users.list")) == 1, "group members are cached"


def test_cancel_withdraws_the_request_and_rewrites_the_approvals_message(svc):
    request_id, message = submit(svc)
    svc.command("cancel", name="cancel")
    assert "was cancelled" in svc.reply_text("cancel")
    assert svc.p.store.one("SELECT state FROM requests WHERE id = ?", (request_id,))["state"] == "cancelled"
    updated = wait_for(
        lambda: svc.slack.messages[(CHANNEL, message["ts"])]["updates"] and svc.slack.messages[(CHANNEL, message["ts"])]
    )
    assert "Cancelled by the requester" in json.dumps(updated["blocks"]) and not buttons(updated["blocks"])
    svc.click(APPROVE, request_id, user=APPROVER, name="late")
    assert "no longer pending" in svc.reply_text("late")


def test_pending_lists_requests_for_approvers_only(svc):
    submit(svc)
    svc.command("pending", user=OUTSIDER, name="outsider")
    assert "Only approvers" in svc.reply_text("outsider")
    svc.command("pending", user=APPROVER, name="approver")
    wait_for(lambda: svc.replies("approver"), what="the pending list")
    listing = svc.replies("approver")[-1]
    assert "alice@example.com" in json.dumps(listing["blocks"])
    assert {b["text"]["text"] for b in buttons(listing["blocks"])} == {"Approve", "Deny"}
