"""The service around the link pages: /healthz, the CA's files, redacted logs, and the serve and demo commands."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from cryptography import x509

from bot.web import logs
from bot.web.app import build_web_app
from bot.web.server import ThreadedServer
from tests.conftest import ROOT
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack, buttons
from tests.support.slack import SIGNING_SECRET, block_actions_body, command_body, free_port, sign, wait_for


def test_healthz_and_the_embedded_cas_crl_and_issuer_in_der(pipeline):
    with ThreadedServer(build_web_app(pipeline)) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/healthz").json() == {"ok": True}
        crl = http.get("/ca/crl")
        assert crl.headers["content-type"] == "application/pkix-crl"
        issuer = http.get("/ca/issuer.crt")
        assert issuer.headers["content-type"] == "application/pkix-cert"
        parsed_crl = x509.load_der_x509_crl(crl.content)
        parsed_issuer = x509.load_der_x509_certificate(issuer.content)
        assert parsed_crl.issuer == parsed_issuer.subject
        assert http.post("/slack/events").status_code in (404, 405), "no Slack endpoint without Slack"


def test_the_log_filter_redacts_link_tokens_in_any_record():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonLines())
    handler.addFilter(logs.RedactLinks())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    token = "Zq3x_9-abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
    try:
        # uvicorn's access log shape: the path arrives as an argument.
        logger.warning('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", f"/links/{token}?x=1", "1.1", 200)
        try:
            raise ValueError(f"bad link https://certs.example.com/links/{token}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert token not in out
    assert out.count("/links/[redacted]") >= 2
    assert all(json.loads(line)["logger"] == "test.redaction" for line in out.splitlines())


def test_uvicorns_access_log_never_shows_a_token(pipeline):
    stream = io.StringIO()
    handler = logs.configure("INFO", stream)
    try:
        with ThreadedServer(build_web_app(pipeline), log_level="info") as server:
            token = "Q" * 43
            httpx.get(f"{server.url}/links/{token}")
            time.sleep(0.2)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "GET /links/[redacted]" in out and token not in out


@pytest.fixture
def fake_slack():
    slack = FakeSlack().start()
    slack.add_user("U0REQUEST", "alice@example.com")
    slack.add_user("U0APPROVE", "ivan@example.com")
    yield slack
    slack.stop()


def test_certportal_serve_answers_slack_runs_the_worker_and_serves_health(base_env, fake_slack):
    port = free_port()
    env = {
        **base_env,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake_slack.api_url,
        "CERTPORTAL__SLACK__APPROVALS_CHANNEL": "C0APPROVALS",
        "CERTPORTAL__SLACK__APPROVERS": "U0APPROVE",
        "CERTPORTAL__WEB__PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 30, "certportal serve to be healthy")
        body = command_body("request", user_id="U0REQUEST", response_url=fake_slack.response_url("cmd"))
        started = time.perf_counter()
        ack = httpx.post(
            url + "/slack/events",
            content=body,
            headers={**sign(body), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert ack.status_code == 200 and time.perf_counter() - started < 1.0
        message = wait_for(lambda: fake_slack.channel_messages("C0APPROVALS"), 15, "the approvals message")[0]
        click = block_actions_body(
            "approve_request", buttons(message["blocks"])[0]["value"], user_id="U0APPROVE", response_url=None
        )
        httpx.post(
            url + "/slack/events",
            content=click,
            headers={**sign(click), "Content-Type": "application/x-www-form-urlencoded"},
        )
        # The worker runs in a child process and tells the requester in Slack too.
        wait_for(lambda: any("is ready" in t for t in fake_slack.dm_texts("U0REQUEST")), 60, "the ready DM")
        httpx.get(url + "/links/" + "T" * 43)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert "T" * 43 not in err and "/links/[redacted]" in err


def test_certportal_serve_refuses_to_start_without_slack_tokens(run_cli):
    result = run_cli("serve")
    assert result.returncode != 0 and "SLACK_BOT_TOKEN" in result.stderr


def test_demo_issues_a_certificate_and_serves_its_two_links(base_env):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--port", str(port), "--exit-after", "60"],
        env=base_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while not any(line.startswith("serving") for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line.strip())
        output = "\n".join(lines)
        assert re.search(r"^issued alice@example.com serial [0-9a-f]+ expires \d{4}-\d\d-\d\d$", output, re.M)
        password_url = re.search(r"password: +(\S+)", output).group(1)
        pfx_url = re.search(r"certificate: +(\S+)", output).group(1)
        assert password_url.startswith(f"http://127.0.0.1:{port}/links/")
        with httpx.Client() as http:
            page = http.get(password_url)
            token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
            shown = http.post(password_url, data={"csrf": token})
            assert shown.status_code == 200 and 'id="secret"' in shown.text
            form = http.get(pfx_url).text
            pfx = http.post(pfx_url, data={"csrf": re.search(r'value="([0-9a-f]+)"', form).group(1)})
            assert pfx.headers["content-type"] == "application/x-pkcs12" and len(pfx.content) > 500
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
