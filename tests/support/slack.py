"""Talking to CertPortal as Slack does: signed requests in Slack's payload formats, over HTTP.

``sign`` computes Slack's ``v0`` signature; the ``*_body`` helpers build slash
command, block_actions, view_submission and event bodies as Slack sends them.
``SlackService`` runs the whole service (the composition of ``certportal
serve``: Bolt app, link pages, worker) on loopback against ``FakeSlack``, and
``running_service`` gives a started one with a standard cast of users.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bot.slack.app import build_notifier, build_slack_app
from bot.web.app import build_web_app
from bot.web.server import ThreadedServer
from bot.web.slack_endpoint import SlackEndpoint
from bot.wiring import build_pipeline
from pipeline.context import Pipeline
from pipeline.settings import Settings, load_settings
from pipeline.worker import Worker
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
REQUESTER, APPROVER, APPROVER2, OUTSIDER = "U0REQUEST", "U0APPROVE", "U0APPROV2", "U0OUTSIDE"
CHANNEL = "C0APPROVALS"


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | str | None = None) -> dict[str, str]:
    """Headers Slack sends: ``v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def command_body(text: str, *, user_id: str, response_url: str, trigger_id: str = "") -> str:
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": "T1",
            "team_domain": "acme",
            "channel_id": "C0GENERAL",
            "channel_name": "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": "/smime",
            "text": text,
            "api_app_id": "A1",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"{time.time_ns()}.trigger",
        }
    )


def block_actions_body(
    action_id: str,
    value: str,
    *,
    user_id: str,
    response_url: str | None,
    channel: str = CHANNEL,
    message_ts: str = "1700000000.000001",
    in_home: bool = False,
    ephemeral: bool = False,
) -> str:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": "T1"},
        "api_app_id": "A1",
        "token": "deprecated-verification-token",
        "trigger_id": f"{time.time_ns()}.trigger",
        "team": {"id": "T1", "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b1",
                "text": {"type": "plain_text", "text": action_id},
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    if in_home:
        payload["container"] = {"type": "view", "view_id": "VHOME"}
        payload["view"] = {"id": "VHOME", "type": "home", "blocks": []}
    else:
        payload["container"] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        }
        payload["channel"] = {"id": channel, "name": "approvals"}
        payload["message"] = {"type": "message", "ts": message_ts, "text": "", "blocks": []}
    if response_url:
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)})


def view_submission_body(callback_id: str, *, user_id: str, private_metadata: str, values: dict[str, Any]) -> str:
    payload = {
        "type": "view_submission",
        "team": {"id": "T1", "domain": "acme"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": "T1"},
        "api_app_id": "A1",
        "token": "deprecated-verification-token",
        "trigger_id": f"{time.time_ns()}.trigger",
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values},
            "hash": "1.abc",
        },
        "response_urls": [],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any]) -> str:
    return json.dumps(
        {
            "token": "deprecated-verification-token",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
            "event": event,
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class SlackService:
    """The service of ``certportal serve`` on loopback, talking to a FakeSlack."""

    def __init__(self, settings: Settings, slack: FakeSlack, *, worker: bool = True) -> None:
        self.settings = settings
        self.slack = slack
        notifier = build_notifier(settings)
        self.p: Pipeline = build_pipeline(settings, notifier=notifier)
        self.app = build_slack_app(self.p, notifier)
        self.web = build_web_app(self.p, slack=SlackEndpoint(self.app, signing_secret=SIGNING_SECRET))
        port = int(urlsplit(settings.web.public_url).port or 0)
        self.server = ThreadedServer(self.web, port=port)
        self.http = httpx.Client(timeout=10)
        self.stop = threading.Event()
        self._worker = threading.Thread(target=Worker(self.p).run, args=(self.stop,), daemon=True) if worker else None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> SlackService:
        self.server.start()
        if self._worker:
            self._worker.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self._worker:
            self._worker.join(timeout=10)
        self.server.stop()
        self.http.close()
        self.p.store.close()

    # -- sending as Slack -------------------------------------------------------
    def post(
        self, body: str, *, content_type: str = "application/x-www-form-urlencoded", **sign_args: Any
    ) -> httpx.Response:
        headers = {"Content-Type": content_type, **sign(body, **sign_args)}
        return self.http.post(self.url + "/slack/events", content=body, headers=headers)

    def command(self, text: str, *, user: str = REQUESTER, name: str = "cmd") -> httpx.Response:
        return self.post(command_body(text, user_id=user, response_url=self.slack.response_url(name)))

    def click(self, action_id: str, value: str, *, user: str, name: str = "click", **kwargs: Any) -> httpx.Response:
        url = None if kwargs.get("in_home") else self.slack.response_url(name)
        return self.post(block_actions_body(action_id, value, user_id=user, response_url=url, **kwargs))

    def submit(self, callback_id: str, *, user: str, private_metadata: str, values: dict[str, Any]) -> httpx.Response:
        return self.post(
            view_submission_body(callback_id, user_id=user, private_metadata=private_metadata, values=values)
        )

    def event(self, event: dict[str, Any]) -> httpx.Response:
        return self.post(event_body(event), content_type="application/json")

    def replies(self, name: str) -> list[dict[str, Any]]:
        """What the user saw privately through response_url ``name``."""
        return [e for e in self.slack.ephemerals if e.get("name") == name]

    def reply_text(self, name: str, timeout: float = 15.0) -> str:
        found = wait_for(lambda: self.replies(name), timeout, f"a reply on {name}")
        return str(found[-1]["text"])


def service_settings(base_env: dict[str, str], slack: FakeSlack, **overrides: str) -> Settings:
    env = dict(base_env)
    env.update(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "CERTPORTAL__SLACK__APPROVERS": f'["{APPROVER}", "{APPROVER2}"]',
            "CERTPORTAL__SLACK__APPROVALS_CHANNEL": CHANNEL,
            "CERTPORTAL__WEB__PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    for dotted, value in overrides.items():
        env["CERTPORTAL__" + dotted.replace(".", "__").upper()] = value
    return load_settings(None, env)


def standard_slack() -> FakeSlack:
    """A started FakeSlack with a requester, two approvers and an outsider, all in example.com."""
    slack = FakeSlack().start()
    slack.add_user(REQUESTER, "alice@example.com", first="Alice", last="Archer")
    slack.add_user(APPROVER, "ivan@example.com", first="Ivan", last="Approver")
    slack.add_user(APPROVER2, "irene@example.com", first="Irene", last="Approver")
    slack.add_user(OUTSIDER, "mallory@example.com", first="Mallory", last="Other")
    return slack


@contextlib.contextmanager
def running_service(base_env: dict[str, str], *, worker: bool = True, **overrides: str) -> Iterator[SlackService]:
    """The whole service on loopback against a fresh FakeSlack (``overrides`` as in ``make_settings``)."""
    slack = standard_slack()
    service = SlackService(service_settings(base_env, slack, **overrides), slack, worker=worker)
    try:
        yield service.start()
    finally:
        service.close()
        slack.stop()
