"""Socket Mode: `certportal serve` with SLACK_APP_TOKEN talks to Slack over a WebSocket, with the same listeners."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from urllib.parse import parse_qsl

import httpx

from tests.conftest import ROOT
from tests.fakes.slack_api import APP_TOKEN, BOT_TOKEN, FakeSlack, FakeSocketMode
from tests.support.slack import REQUESTER, command_body, free_port, wait_for


def test_serve_in_socket_mode_acks_commands_over_the_websocket(base_env):
    slack = FakeSlack().start()
    slack.add_user(REQUESTER, "alice@example.com")
    slack.socket_mode = FakeSocketMode().start()
    port = free_port()
    env = {
        **base_env,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "CERTPORTAL__SLACK__APPROVALS_CHANNEL": "C0APPROVALS",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--port", str(port), "--no-worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert slack.socket_mode.connected.wait(30), "serve did not open the Socket Mode connection"
        wait_for(lambda: _healthy(port), 30, "the web server")
        assert httpx.post(f"http://127.0.0.1:{port}/slack/events").status_code in (404, 405)

        def command(text: str) -> dict:
            return dict(parse_qsl(command_body(text, user_id=REQUESTER, response_url=slack.response_url("sock"))))

        slack.socket_mode.send_envelope("env-help", "slash_commands", command("help"))
        ack = wait_for(lambda: slack.socket_mode.acks.get("env-help"), 15, "the help ack")
        assert "/smime request" in json.dumps(ack["payload"])
        slack.socket_mode.send_envelope("env-request", "slash_commands", command("request over socket"))
        wait_for(lambda: slack.socket_mode.acks.get("env-request"), 15, "the request ack")
        wait_for(lambda: slack.channel_messages("C0APPROVALS"), 15, "the approvals message")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        slack.socket_mode.stop()
        slack.stop()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False
