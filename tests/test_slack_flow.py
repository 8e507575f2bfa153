"""The main job through Slack: request -> approve -> ready DM -> one-time links -> reveal and download.

Everything goes over HTTP: signed Slack requests to the running service, its
Web API calls to the fake Slack, and the link pages fetched like a browser.
"""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from bot.slack.blocks import DOWNLOAD, SHOW_PASSWORD
from tests.fakes.slack_api import button_texts, buttons
from tests.support.slack import APPROVER, CHANNEL, REQUESTER, SlackService, running_service, wait_for


@pytest.fixture
def svc(base_env):
    with running_service(base_env) as service:
        yield service


def request_and_approve(svc: SlackService) -> dict:
    assert svc.command("request new laptop, need encrypted mail").status_code == 200
    assert "went to the approvers" in svc.reply_text("cmd")
    message = wait_for(lambda: svc.slack.channel_messages(CHANNEL), what="approvals message")[0]
    texts = button_texts(message["blocks"])
    assert any("Approve" in t for t in texts) and any("Deny" in t for t in texts)
    body = str(message["blocks"])
    assert "alice@example.com" in body and "new laptop, need encrypted mail" in body and f"<@{REQUESTER}>" in body
    request_id = next(b["value"] for b in buttons(message["blocks"]) if "Approve" in b["text"]["text"])
    assert svc.click("approve_request", request_id, user=APPROVER, name="approve").status_code == 200
    return message | {"request_id": request_id}


def ready_dm(svc: SlackService) -> dict:
    def ready():
        for (channel, _), m in svc.slack.messages.items():
            if channel == f"D{REQUESTER}" and any("password" in t for t in button_texts(m["blocks"])):
                return m
        return None

    return wait_for(ready, 60, "the ready DM")


def link_from(svc: SlackService, name: str) -> str:
    reply = wait_for(lambda: svc.replies(name), what=f"link reply {name}")[-1]
    assert reply.get("response_type") == "ephemeral"
    url = next(b["url"] for b in buttons(reply["blocks"]) if b.get("url"))
    assert url.startswith(svc.settings.web.public_url + "/links/")
    return url


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def test_request_approve_ready_link_reveal_and_download(svc):
    approvals = request_and_approve(svc)
    dm = ready_dm(svc)
    texts = button_texts(dm["blocks"])
    assert "Show my password" in texts and "Download certificate" in texts
    assert all("url" not in b for b in buttons(dm["blocks"])), "ready DM buttons carry no URL"
    assert "encrypted copy" in str(dm["blocks"]), "the employee is told the key is escrowed"
    wait_for(
        lambda: all(x in " ".join(svc.slack.dm_texts(REQUESTER)) for x in ("approved", "being issued", "is ready")),
        what="a DM at each step",
    )

    # The approvals message now says who decided and has no buttons.
    updated = wait_for(lambda: (m := svc.slack.messages[(CHANNEL, approvals["ts"])])["updates"] and m)
    assert not buttons(updated["blocks"])
    assert f"Approved by <@{APPROVER}>" in str(updated["blocks"])

    serial = buttons(dm["blocks"])[0]["value"]
    svc.click(SHOW_PASSWORD, serial, user=REQUESTER, name="pw", channel=f"D{REQUESTER}")
    svc.click(DOWNLOAD, serial, user=REQUESTER, name="pfx", channel=f"D{REQUESTER}")
    password_url, pfx_url = link_from(svc, "pw"), link_from(svc, "pfx")

    # GET (as an unfurler, a scanner, a prefetch would) consumes nothing.
    path = password_url[len(svc.settings.web.public_url) :]
    for _ in range(3):
        page = svc.http.get(svc.url + path)
        assert page.status_code == 200 and "alice@example.com" in page.text and "expires" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    cert = svc.p.store.one("SELECT vault_ref FROM certificates WHERE serial = ?", (serial,))
    secret = svc.p.vault.retrieve(ref=cert["vault_ref"], reason="test")
    revealed = svc.http.post(svc.url + path, data={"csrf": csrf_of(page.text)}, headers={"Origin": "null"})
    assert revealed.status_code == 200 and secret.password in revealed.text
    again = svc.http.post(svc.url + path, data={"csrf": csrf_of(page.text)}, headers={"Origin": "null"})
    assert again.status_code == 410 and secret.password not in again.text and "already been used" in again.text
    assert "already been used" in svc.http.get(svc.url + path).text

    pfx_path = pfx_url[len(svc.settings.web.public_url) :]
    form = svc.http.get(svc.url + pfx_path).text
    download = svc.http.post(svc.url + pfx_path, data={"csrf": csrf_of(form)})
    assert download.headers["content-type"] == "application/x-pkcs12"
    assert "attachment" in download.headers["content-disposition"]
    key, leaf, _ = pkcs12.load_key_and_certificates(download.content, secret.password.encode())
    assert key is not None and format(leaf.serial_number, "x") == serial

    actions = [e["action"] for e in svc.p.audit.entries()]
    assert "link.revealed" in actions and "link.downloaded" in actions
    audit_text = str(list(svc.p.audit.entries()))
    token = path.rsplit("/", 1)[1]
    assert token not in audit_text and secret.password not in audit_text

    # Nothing secret went to Slack, and links only ever went out privately.
    recorded = svc.slack.recorded_text()
    assert secret.password not in recorded
    assert base64.b64encode(secret.pfx)[:40].decode() not in recorded
    persistent = str([m for m in svc.slack.messages.values()])
    assert "/links/" not in persistent


def test_second_request_gets_a_helpful_answer_not_a_duplicate(svc):
    svc.command("request first")
    assert "went to the approvers" in svc.reply_text("cmd")
    svc.command("request second", name="cmd2")
    assert "already have a request" in svc.reply_text("cmd2")
    assert len(svc.slack.channel_messages(CHANNEL)) == 1
    assert svc.p.store.one("SELECT COUNT(*) AS n FROM requests")["n"] == 1
