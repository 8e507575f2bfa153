"""What reaches /slack/events: only requests signed by Slack within five minutes, in shapes we understand.

Forged, stale or malformed requests get a 4xx (never a 5xx) and change nothing.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from slack_bolt import BoltRequest

from tests.support.slack import (
    APPROVER,
    REQUESTER,
    SlackService,
    block_actions_body,
    command_body,
    event_body,
    running_service,
    sign,
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    env = {"CERTPORTAL_DATA_DIR": str(tmp_path_factory.mktemp("data")), "CERTPORTAL__CRYPTO__KEY_TYPE": "ec-p256"}
    with running_service(env, worker=False) as service:
        yield service


def nothing_changed(svc: SlackService) -> bool:
    return (
        svc.p.store.one("SELECT COUNT(*) AS n FROM requests")["n"] == 0
        and not svc.slack.api_calls("chat.postMessage")
        and not svc.slack.ephemerals
    )


def raw_post(
    svc: SlackService, body: str | bytes, headers: dict[str, str], ctype: str = "application/x-www-form-urlencoded"
):
    return svc.http.post(svc.url + "/slack/events", content=body, headers={"Content-Type": ctype, **headers})


def test_forged_and_stale_signatures_are_refused_and_change_nothing(svc):
    body = command_body("request", user_id=REQUESTER, response_url=svc.slack.response_url())
    now = int(time.time())
    cases = {
        "wrong secret": sign(body, secret="not-the-secret"),
        "stale": sign(body, timestamp=now - 310),
        "from the future": sign(body, timestamp=now + 310),
        "no signature": {"X-Slack-Request-Timestamp": str(now)},
        "no headers": {},
        "tampered body": sign(body.replace("request", "pending")),
    }
    for what, headers in cases.items():
        response = raw_post(svc, body, headers)
        assert response.status_code == 401, what
    # A signature within the window but for another timestamp header is refused too.
    headers = sign(body, timestamp=now - 10)
    headers["X-Slack-Request-Timestamp"] = str(now)
    assert raw_post(svc, body, headers).status_code == 401
    time.sleep(0.3)
    assert nothing_changed(svc)


@pytest.mark.parametrize(
    "body, ctype",
    [
        ("", "application/x-www-form-urlencoded"),
        ("payload=", "application/x-www-form-urlencoded"),
        ("payload=%7Bnot-json", "application/x-www-form-urlencoded"),
        ("payload=" + json.dumps([1, 2]), "application/x-www-form-urlencoded"),
        (
            urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": APPROVER}})}),
            "application/x-www-form-urlencoded",
        ),
        (
            urlencode(
                {"payload": json.dumps({"type": "block_actions", "actions": [{"action_id": "approve_request"}]})}
            ),
            "application/x-www-form-urlencoded",
        ),
        (
            urlencode(
                {
                    "payload": json.dumps(
                        {"type": "block_actions", "user": {"id": APPROVER}, "actions": [{"value": "x"}]}
                    )
                }
            ),
            "application/x-www-form-urlencoded",
        ),
        (
            urlencode({"payload": json.dumps({"type": "view_submission", "user": {"id": APPROVER}})}),
            "application/x-www-form-urlencoded",
        ),
        (
            urlencode({"payload": json.dumps({"type": "shortcut", "user": {"id": APPROVER}, "callback_id": "x"})}),
            "application/x-www-form-urlencoded",
        ),
        (urlencode({"command": "/smime", "text": "request"}), "application/x-www-form-urlencoded"),
        (urlencode({"text": "request", "user_id": REQUESTER}), "application/x-www-form-urlencoded"),
        ("{not json", "application/json"),
        (json.dumps({"type": "event_callback"}), "application/json"),
        (json.dumps({"type": "event_callback", "event": {"user": "U1"}}), "application/json"),
        (json.dumps({"type": "url_verification"}), "application/json"),
        (json.dumps(["a"]), "application/json"),
    ],
)
def test_malformed_requests_get_a_4xx_never_a_5xx(svc, body, ctype):
    response = raw_post(svc, body, sign(body), ctype)
    assert 400 <= response.status_code < 500
    assert nothing_changed(svc)


def test_non_numeric_timestamp_and_non_utf8_bodies_get_a_4xx(svc):
    body = command_body("request", user_id=REQUESTER, response_url=svc.slack.response_url())
    headers = sign(body)
    for ts in ("abc", "1e9", "", "-5", "१२३".encode()):
        response = raw_post(svc, body, {**headers, "X-Slack-Request-Timestamp": ts})
        assert 400 <= response.status_code < 500, ts
    binary = b"payload=\xff\xfe"
    ts = str(int(time.time()))
    response = raw_post(svc, binary, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=00"})
    assert 400 <= response.status_code < 500
    assert nothing_changed(svc)


def test_unknown_actions_and_views_are_refused(svc):
    body = block_actions_body("format_disk", "now", user_id=APPROVER, response_url=svc.slack.response_url())
    assert raw_post(svc, body, sign(body)).status_code == 404
    submission = urlencode(
        {
            "payload": json.dumps(
                {
                    "type": "view_submission",
                    "user": {"id": APPROVER},
                    "view": {"callback_id": "nope", "state": {"values": {}}},
                }
            )
        }
    )
    assert 400 <= raw_post(svc, submission, sign(submission)).status_code < 500
    assert nothing_changed(svc)


def test_url_verification_and_ssl_check_are_answered(svc):
    body = json.dumps(
        {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}
    )
    response = raw_post(svc, body, sign(body), "application/json")
    assert response.status_code == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in response.text
    check = "ssl_check=1&token=x"
    assert raw_post(svc, check, sign(check)).status_code == 200


def test_unknown_subcommands_print_help_at_once(svc):
    for text in ("", "help", "frobnicate", "REQUEST-ish"):
        body = command_body(text, user_id=REQUESTER, response_url=svc.slack.response_url())
        response = raw_post(svc, body, sign(body))
        assert response.status_code == 200
        assert response.json()["response_type"] == "ephemeral"
        assert "/smime request" in response.json()["text"] and "/smime revoke" in response.json()["text"]
    assert nothing_changed(svc)


def test_socket_mode_bodies_are_checked_too(svc):
    response = svc.app.dispatch(
        BoltRequest(body={"type": "block_actions", "user": {"id": APPROVER}}, mode="socket_mode")
    )
    assert response.status == 400
    event = json.loads(event_body({"type": "app_home_opened", "user": REQUESTER, "tab": "home"}))
    assert svc.app.dispatch(BoltRequest(body=event, mode="socket_mode")).status == 200


def test_oversized_bodies_are_refused_before_they_are_read(svc):
    body = "payload=" + "x" * 1_100_000
    assert raw_post(svc, body, sign(body)).status_code == 413
