"""What an employee does in Slack besides asking: policy refusals, status, links, App Home, renew, revoke."""

from __future__ import annotations

import json

import pytest

from bot.slack.blocks import DOWNLOAD, RENEW, SHOW_PASSWORD
from bot.slack.views import REVOKE_VIEW
from pipeline.certificates import current_certificate
from pipeline.ports import Notification, NotificationKind
from pipeline.requests import create_request
from tests.fakes.server import Fault
from tests.fakes.slack_api import button_texts, buttons
from tests.support.slack import APPROVER, CHANNEL, OUTSIDER, REQUESTER, SlackService, running_service, wait_for


@pytest.fixture
def svc(base_env):
    with running_service(base_env) as service:
        yield service


def issue_for(svc: SlackService, user: str = REQUESTER, mailbox: str = "alice@example.com", *, slack: bool = True):
    create_request(
        svc.p,
        mailbox=mailbox,
        requested_by=user if slack else "cli:admin",
        slack_user_id=user if slack else "",
        approved=True,
        source="slack" if slack else "cli",
    )
    return wait_for(lambda: current_certificate(svc.p, mailbox), 60, "the certificate")


@pytest.mark.parametrize(
    "flags, email, expected",
    [
        ({"is_restricted": True}, "guest@example.com", "Guest accounts"),
        ({"is_ultra_restricted": True}, "single@example.com", "Guest accounts"),
        ({"is_bot": True}, "robot@example.com", "Bots"),
        ({"deleted": True}, "gone@example.com", "deactivated"),
        ({}, "someone@gmail.com", "not in a domain CertPortal issues for (example.com)"),
    ],
)
def test_accounts_policy_refuses_get_a_clear_answer_and_no_request(base_env, flags, email, expected):
    with running_service(base_env, worker=False) as svc:
        svc.slack.add_user("U0ODD", email, **flags)
        assert svc.command("request", user="U0ODD").status_code == 200
        assert expected in svc.reply_text("cmd")
        assert svc.p.store.one("SELECT COUNT(*) AS n FROM requests")["n"] == 0
        assert not svc.slack.channel_messages(CHANNEL)


def test_guests_may_ask_when_policy_allows_and_names_come_from_the_profile(base_env):
    with running_service(base_env, worker=False, **{"policy.allow_guests": "true"}) as svc:
        svc.slack.add_user("U0GUEST", "gwen@example.com", first="Gwen", last="Guest", is_restricted=True)
        svc.command("request contractor", user="U0GUEST")
        assert "went to the approvers" in svc.reply_text("cmd")
        row = svc.p.store.one("SELECT * FROM requests")
        assert (row["mailbox"], row["first_name"], row["last_name"]) == ("gwen@example.com", "Gwen", "Guest")


def test_the_mailbox_is_the_profile_email_never_typed_text(base_env):
    with running_service(base_env, worker=False) as svc:
        svc.command("request bob@example.com please")
        svc.reply_text("cmd")
        assert svc.p.store.one("SELECT mailbox FROM requests")["mailbox"] == "alice@example.com"


def test_another_users_button_gets_no_link(svc):
    cert = issue_for(svc)
    for action in (SHOW_PASSWORD, DOWNLOAD):
        svc.click(action, cert["serial"], user=OUTSIDER, name=f"steal-{action}")
        assert "not yours" in svc.reply_text(f"steal-{action}")
    assert svc.p.store.one("SELECT COUNT(*) AS n FROM links")["n"] == 0
    assert "/links/" not in svc.slack.recorded_text()


def test_status_and_password_command_and_a_second_request(svc):
    cert = issue_for(svc)
    svc.command("status", name="status")
    status = svc.reply_text("status")
    assert cert["serial"] in status and "alice@example.com" in status
    svc.command("password", name="pw")
    reply = wait_for(lambda: svc.replies("pw"))[-1]
    assert reply["response_type"] == "ephemeral" and "/links/" in json.dumps(reply["blocks"])
    svc.command("request again", name="again")
    assert "already have a valid certificate" in svc.reply_text("again")


def test_app_home_shows_the_certificate_and_its_buttons_open_a_modal(svc):
    cert = issue_for(svc)
    svc.event({"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"})
    home = wait_for(lambda: svc.slack.home_views.get(REQUESTER), what="App Home")
    text = json.dumps(home)
    assert home["type"] == "home" and cert["serial"] in text and "alice@example.com" in text and "active" in text
    assert {"Show my password", "Download certificate"} <= set(button_texts(home["blocks"]))
    svc.click(DOWNLOAD, cert["serial"], user=REQUESTER, in_home=True)
    modal = wait_for(lambda: svc.slack.views_opened, what="the link modal")[-1]
    assert modal["type"] == "modal" and any(b.get("url", "").count("/links/") for b in buttons(modal["blocks"]))


def test_renew_is_auto_approved_for_a_valid_certificate(svc):
    cert = issue_for(svc)
    svc.command("renew", name="renew")
    assert "approved automatically" in svc.reply_text("renew")
    renewed = wait_for(
        lambda: (c := current_certificate(svc.p, "alice@example.com")) and c["serial"] != cert["serial"] and c, 60
    )
    assert renewed["key_type"] == cert["key_type"]
    assert not svc.slack.channel_messages(CHANNEL)


def test_status_and_app_home_list_earlier_certificates_with_their_own_links(svc):
    first = issue_for(svc)
    svc.command("renew", name="renew")
    renewed = wait_for(
        lambda: (c := current_certificate(svc.p, "alice@example.com")) and c["serial"] != first["serial"] and c, 60
    )
    svc.command("status", name="status")
    reply = wait_for(lambda: svc.replies("status"))[-1]
    history = [b for b in reply["blocks"] if b.get("block_id") == f"history:{first['serial']}"]
    assert history and {"Show my password", "Download certificate"} <= set(button_texts(history))
    assert "superseded" in json.dumps(reply["blocks"]) and renewed["serial"] in reply["text"]
    # A new laptop must still read old mail: the superseded certificate's password comes as a private link.
    svc.click(SHOW_PASSWORD, first["serial"], user=REQUESTER, name="old-password")
    link = wait_for(lambda: svc.replies("old-password"))[-1]
    assert link["response_type"] == "ephemeral" and "/links/" in json.dumps(link["blocks"])
    assert svc.p.store.one("SELECT serial FROM links")["serial"] == first["serial"]
    svc.event({"type": "app_home_opened", "user": REQUESTER, "channel": f"D{REQUESTER}", "tab": "home"})
    home = wait_for(lambda: svc.slack.home_views.get(REQUESTER), what="App Home")
    assert any(b.get("block_id") == f"history:{first['serial']}" for b in home["blocks"])


def test_renewal_needs_an_approver_when_policy_says_so(base_env):
    with running_service(base_env, **{"policy.auto_approve_renewals": "false"}) as svc:
        issue_for(svc)
        svc.command("renew", name="renew")
        assert "went to the approvers" in svc.reply_text("renew")
        assert wait_for(lambda: svc.slack.channel_messages(CHANNEL))


def test_a_reminder_carries_a_renew_button_that_renews(svc):
    cert = issue_for(svc)
    svc.p.notifier.send(
        notification=Notification(
            kind=NotificationKind.REMINDER,
            text="Your S/MIME certificate expires in 14 days.",
            mailbox=cert["mailbox"],
            serial=cert["serial"],
            slack_user_id=REQUESTER,
        )
    )
    reminder = next(m for m in svc.slack.messages.values() if "14 days" in m["text"])
    assert any("Renew" in t for t in button_texts(reminder["blocks"]))
    svc.click(RENEW, cert["serial"], user=REQUESTER, name="renew", channel=f"D{REQUESTER}")
    assert "approved automatically" in svc.reply_text("renew")


def test_revoke_opens_a_modal_and_queues_the_revocation(svc):
    cert = issue_for(svc)
    svc.command("revoke", name="revoke")
    modal = wait_for(lambda: svc.slack.views_opened, what="the revoke modal")[-1]
    assert modal["callback_id"] == REVOKE_VIEW
    options = [o["value"] for b in modal["blocks"] if b["type"] == "input" for o in b["element"]["options"]]
    assert options == ["keyCompromise", "cessationOfOperation"]
    svc.submit(
        REVOKE_VIEW,
        user=REQUESTER,
        private_metadata=modal["private_metadata"],
        values={"reason": {"reason": {"type": "radio_buttons", "selected_option": {"value": "keyCompromise"}}}},
    )
    revoked = wait_for(
        lambda: (
            svc.p.store.one("SELECT status, revocation_reason FROM certificates WHERE serial = ?", (cert["serial"],))
            if svc.p.store.one("SELECT status FROM certificates WHERE serial = ?", (cert["serial"],))["status"]
            == "revoked"
            else None
        ),
        30,
        "the revocation",
    )
    assert revoked["revocation_reason"] == "keyCompromise"
    wait_for(lambda: any("revoked" in t for t in svc.slack.dm_texts(REQUESTER)), what="the revoked DM")


def test_only_approvers_revoke_someone_else(svc):
    issue_for(svc)
    svc.command(f"revoke <@{REQUESTER}|alice>", user=OUTSIDER, name="outsider")
    assert "Only approvers" in svc.reply_text("outsider")
    svc.command(f"revoke <@{REQUESTER}|alice>", user=APPROVER, name="approver")
    modal = wait_for(lambda: svc.slack.views_opened, what="the approver's revoke modal")[-1]
    assert "affiliationChanged" in json.dumps(modal) and "alice@example.com" in json.dumps(modal)


def test_a_deactivated_user_is_offboarded(svc):
    cert = issue_for(svc)
    user = dict(svc.slack.users[REQUESTER], deleted=True)
    for _ in range(2):  # Slack retries events; a replay changes nothing
        assert svc.event({"type": "user_change", "user": user, "event_ts": "1700000000.1"}).status_code == 200
    wait_for(
        lambda: (
            svc.p.store.one("SELECT status FROM certificates WHERE serial = ?", (cert["serial"],))["status"]
            == "revoked"
        ),
        30,
        "the offboarding revocation",
    )
    row = svc.p.store.one("SELECT revocation_reason FROM certificates WHERE serial = ?", (cert["serial"],))
    assert row["revocation_reason"] == "affiliationChanged"
    assert wait_for(lambda: [m for m in svc.slack.channel_messages(CHANNEL) if "deactivated" in m["text"]])


def test_certificates_issued_outside_slack_reach_their_owner_by_email(svc):
    cert = issue_for(svc, slack=False)
    dm = wait_for(lambda: [m for m in svc.slack.channel_messages(f"D{REQUESTER}") if "is ready" in m["text"]], 30)
    assert dm and svc.slack.api_calls("users.lookupByEmail")
    svc.click(SHOW_PASSWORD, cert["serial"], user=REQUESTER, name="pw", channel=f"D{REQUESTER}")
    assert "/links/" in json.dumps(wait_for(lambda: svc.replies("pw"))[-1]["blocks"])


def test_a_rate_limited_post_is_retried_after_retry_after(svc):
    svc.slack.fail_next(
        Fault(status=429, retry_after="1", body={"ok": False, "error": "ratelimited"}), path="chat.postMessage"
    )
    svc.command("request", name="cmd")
    assert "went to the approvers" in svc.reply_text("cmd", timeout=20)
    assert len(svc.slack.api_calls("chat.postMessage")) == 2
    assert len(svc.slack.channel_messages(CHANNEL)) == 1
