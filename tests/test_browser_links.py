"""The link pages in a real browser: headless Chromium opens a link, reveals the password, downloads the PFX.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``
(JSON messages separated by NUL on file descriptors 3 and 4), so no driver
package is needed. The form POST is the browser's own, sent with the
``Origin: null`` that ``Referrer-Policy: no-referrer`` makes it send.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from bot.web.app import build_web_app
from bot.web.server import ThreadedServer
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.drive import run_until_settled
from pipeline.links import create_link
from pipeline.requests import create_request
from tests.support.slack import free_port

pytestmark = pytest.mark.browser
TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Chromium:
    """Headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        flags = ["--headless=new", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage"]  # fmt: skip
        if os.geteuid() == 0:
            flags.append("--no-sandbox")
        # A tiny trampoline makes our pipe ends the browser's fds 3 (commands in) and 4 (replies out).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(to_child_r), str(from_child_w), CHROMIUM, *flags, "about:blank"],
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 20.0, since: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            self.events.append(self._read())
        raise AssertionError(f"no {method} within {timeout}s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        mark = len(self.events)
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired", since=mark)

    def click_and_wait_for_load(self, selector: str) -> None:
        mark = len(self.events)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self.wait_event("Page.loadEventFired", since=mark)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_child, 65536)
            if not chunk:
                raise AssertionError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            self.proc.kill()
        self.proc.wait(timeout=20)
        os.close(self._to_child)
        os.close(self._from_child)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (scripts/system-deps installs it)")
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.fixture
def served(make_settings):
    port = free_port()
    p = build_pipeline(make_settings(**{"web.public_url": f"http://127.0.0.1:{port}"}))
    request = create_request(p, mailbox="alice@example.com", requested_by="test", approved=True)
    run_until_settled(p, [request["id"]], timeout=60)
    with ThreadedServer(build_web_app(p), port=port) as server:
        yield p, server.url, current_certificate(p, "alice@example.com")
    p.store.close()


def post_headers(browser: Chromium, url: str) -> dict[str, str]:
    """The headers Chromium really sent with its POST to ``url``."""
    sent = {
        e["params"]["requestId"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
        and e["params"]["request"]["url"] == url
        and e["params"]["request"]["method"] == "POST"
    }
    for e in browser.events:
        if e.get("method") == "Network.requestWillBeSentExtraInfo" and e["params"]["requestId"] in sent:
            return {k.lower(): v for k, v in e["params"]["headers"].items()}
    return {}


def test_a_browser_reveals_the_password_once_and_downloads_the_pfx(chromium, served, tmp_path):
    p, base, cert = served
    secret = p.vault.retrieve(ref=cert["vault_ref"], reason="test")
    password_token, _ = create_link(p, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    url = f"{base}/links/{password_token}"

    chromium.navigate(url)
    assert "Show my password" in chromium.evaluate("document.body.innerText")
    assert p.store.one("SELECT used_at FROM links")["used_at"] is None, "opening the page used nothing"
    chromium.click_and_wait_for_load("button[type=submit]")
    assert chromium.evaluate("document.getElementById('secret').value") == secret.password
    assert chromium.evaluate("document.getElementById('copy').hidden") is False, "the copy script ran under the CSP"
    assert post_headers(chromium, url).get("origin") == "null"
    console = json.dumps(
        [e for e in chromium.events if e.get("method") in ("Log.entryAdded", "Runtime.exceptionThrown")]
    )
    assert "Content Security Policy" not in console

    chromium.navigate(url)
    assert "already been used" in chromium.evaluate("document.body.innerText")

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chromium.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads), eventsEnabled=True)
    pfx_token, _ = create_link(p, kind="pfx", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    chromium.navigate(f"{base}/links/{pfx_token}")
    mark = len(chromium.events)
    chromium.evaluate("document.querySelector('button[type=submit]').click()")
    deadline = time.monotonic() + 20
    while not any(
        e.get("method") == "Browser.downloadProgress" and e["params"]["state"] == "completed"
        for e in chromium.events[mark:]
    ):
        assert time.monotonic() < deadline, "the download did not complete"
        chromium.events.append(chromium._read())
    (saved,) = list(downloads.iterdir())
    assert saved.name == "alice@example.com.p12"
    key, leaf, _ = pkcs12.load_key_and_certificates(saved.read_bytes(), secret.password.encode())
    assert key is not None and format(leaf.serial_number, "x") == cert["serial"]
    actions = [e["action"] for e in p.audit.entries()]
    assert actions.count("link.revealed") == 1 and actions.count("link.downloaded") == 1
