"""The link pages in a real browser: headless Chromium opens a link, reveals the password, downloads the PFX.

Playwright drives the system Chromium. The form POST is the browser's own, sent
with the ``Origin: null`` that ``Referrer-Policy: no-referrer`` makes it send.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from playwright.sync_api import Page, sync_playwright

from bot.web.app import build_web_app
from bot.web.server import ThreadedServer
from bot.wiring import build_pipeline
from pipeline.certificates import current_certificate
from pipeline.drive import run_until_settled
from pipeline.links import create_link
from pipeline.requests import create_request
from tests.support.slack import free_port

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Recorded from before any page script runs; a blocked inline script fires this event.
RECORD_CSP_VIOLATIONS = (
    "window.cspViolations = [];"
    "document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective));"
)


@pytest.fixture
def page() -> Iterator[Page]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (scripts/system-deps installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True)
        context.set_default_timeout(15_000)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        yield context.new_page()
        context.close()
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


def test_a_browser_reveals_the_password_once_and_downloads_the_pfx(page, served, tmp_path):
    p, base, cert = served
    secret = p.vault.retrieve(ref=cert["vault_ref"], reason="test")
    password_token, _ = create_link(p, kind="password", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    url = f"{base}/links/{password_token}"
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.on("pageerror", lambda error: console.append(str(error)))

    page.goto(url)
    assert "Show my password" in page.inner_text("body")
    assert p.store.one("SELECT used_at FROM links")["used_at"] is None, "opening the page used nothing"
    with page.expect_request(lambda r: r.method == "POST" and r.url == url) as posted:
        page.click("button[type=submit]")
    page.wait_for_load_state("load")
    assert page.input_value("#secret") == secret.password
    assert page.eval_on_selector("#copy", "b => b.hidden") is False, "the copy script ran under the CSP"
    assert page.evaluate("window.cspViolations") == []
    assert posted.value.all_headers().get("origin") == "null"
    assert not [m for m in console if "Content Security Policy" in m], console

    page.goto(url)
    assert "already been used" in page.inner_text("body")

    pfx_token, _ = create_link(p, kind="pfx", serial=cert["serial"], owner_slack_id="U1", actor="U1")
    page.goto(f"{base}/links/{pfx_token}")
    with page.expect_download() as downloading:
        page.click("button[type=submit]")
    download = downloading.value
    assert download.failure() is None, "the download did not complete"
    assert download.suggested_filename == "alice@example.com.p12"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    key, leaf, _ = pkcs12.load_key_and_certificates(saved.read_bytes(), secret.password.encode())
    assert key is not None and format(leaf.serial_number, "x") == cert["serial"]
    actions = [e["action"] for e in p.audit.entries()]
    assert actions.count("link.revealed") == 1 and actions.count("link.downloaded") == 1
