"""The Slack notifier: who hears what, rewriting approvals messages, and Slack outages as RetryLater."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import RetryLater
from pipeline.ports import Notification, NotificationKind
from pipeline.requests import create_request, decide
from tests.fakes.server import Fault
from tests.fakes.slack_api import buttons
from tests.support.slack import APPROVER, APPROVER2, CHANNEL, REQUESTER, running_service

K = NotificationKind


@pytest.fixture
def svc(base_env):
    with running_service(base_env, worker=False) as service:
        yield service


def pending(svc, mailbox: str = "alice@example.com", user: str = REQUESTER) -> dict:
    return create_request(svc.p, mailbox=mailbox, requested_by=user, slack_user_id=user, source="slack")


def submitted(request: dict) -> Notification:
    return Notification(
        kind=K.REQUEST_SUBMITTED, text="new request", request_id=request["id"], mailbox=request["mailbox"]
    )


def test_a_failure_tells_the_requester_plainly_and_the_approvers_in_detail(svc):
    svc.p.notifier.send(
        notification=Notification(
            kind=K.REQUEST_FAILED,
            text="Your S/MIME certificate for alice@example.com could not be issued: the CA refused the order.",
            mailbox="alice@example.com",
            request_id="r1",
            slack_user_id=REQUESTER,
            extra={"admin_detail": "digicert: 400 invalid_org"},
        )
    )
    (dm,) = svc.slack.dm_texts(REQUESTER)
    assert "the CA refused the order" in dm and "invalid_org" not in dm
    (notice,) = svc.slack.channel_messages(CHANNEL)
    assert "invalid_org" in notice["text"]


@pytest.mark.parametrize("kind", [K.PUBLISH_FAILING, K.ADMIN_NOTICE, K.NEEDS_RECONCILIATION, K.OFFBOARDED])
def test_approver_notices_go_to_the_approvals_channel_only(svc, kind):
    svc.p.notifier.send(notification=Notification(kind=kind, text="look at this", slack_user_id=REQUESTER))
    assert [m["text"] for m in svc.slack.channel_messages(CHANNEL)] == ["look at this"]
    assert svc.slack.dm_texts(REQUESTER) == []


def test_without_a_channel_each_approver_gets_a_copy_and_every_copy_is_rewritten(base_env):
    with running_service(base_env, worker=False, **{"slack.approvals_channel": ""}) as svc:
        request = pending(svc)
        svc.p.notifier.send(notification=submitted(request))
        svc.p.notifier.send(notification=submitted(request))  # a repeat posts nothing new
        copies = {a: svc.slack.channel_messages(f"D{a}") for a in (APPROVER, APPROVER2)}
        assert all(len(c) == 1 and buttons(c[0]["blocks"]) for c in copies.values())
        decide(svc.p, request_id=request["id"], approver=APPROVER2, approve=True)
        for copy in copies.values():
            assert copy[0]["updates"] == 1 and not buttons(copy[0]["blocks"])
            assert f"Approved by <@{APPROVER2}>" in json.dumps(copy[0]["blocks"])


def test_an_expired_request_is_rewritten_as_expired(svc):
    request = pending(svc)
    svc.p.notifier.send(notification=submitted(request))
    with svc.p.store.write() as conn:
        conn.execute("UPDATE requests SET state = 'expired' WHERE id = ?", (request["id"],))
    svc.p.notifier.send(
        notification=Notification(
            kind=K.REQUEST_EXPIRED, text="Your request expired.", request_id=request["id"], slack_user_id=REQUESTER
        )
    )
    (message,) = svc.slack.channel_messages(CHANNEL)
    assert "Expired without a decision" in json.dumps(message["blocks"]) and not buttons(message["blocks"])
    assert svc.slack.dm_texts(REQUESTER) == ["Your request expired."]


def test_slack_outages_are_retry_later_and_permanent_errors_are_dropped(svc):
    svc.slack.fail_next(Fault(status=503), path="chat.postMessage")
    with pytest.raises(RetryLater):
        svc.p.notifier.send(notification=Notification(kind=K.PROVISIONING, text="issuing", slack_user_id=REQUESTER))
    # A user Slack does not know: logged, not raised, nothing posted.
    svc.p.notifier.send(notification=Notification(kind=K.PROVISIONING, text="issuing", slack_user_id="U0GONE"))
    # No Slack user for a mailbox: nothing to do.
    svc.p.notifier.send(notification=Notification(kind=K.REVOKED, text="revoked", mailbox="nobody@example.com"))
    assert svc.slack.dm_texts("U0GONE") == [] and not svc.slack.messages
