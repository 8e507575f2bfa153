"""The link pages over HTTP: confirm on GET, release on a CSRF-bound POST, strict headers, rate limits."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from bot.web.app import build_web_app
from bot.web.server import ThreadedServer
from pipeline.certificates import current_certificate
from pipeline.clock import iso
from pipeline.drive import run_until_settled
from pipeline.links import create_link
from pipeline.requests import create_request


@pytest.fixture
def web(pipeline):
    request = create_request(pipeline, mailbox="alice@example.com", requested_by="test", approved=True)
    run_until_settled(pipeline, [request["id"]], timeout=60)
    with ThreadedServer(build_web_app(pipeline)) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield pipeline, http, current_certificate(pipeline, "alice@example.com")


def new_link(p, cert, kind="password") -> str:
    token, _ = create_link(p, kind=kind, serial=cert["serial"], owner_slack_id="U1", actor="U1")
    return f"/links/{token}"


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def assert_locked_down(response: httpx.Response) -> None:
    h = response.headers
    assert h["cache-control"] == "no-store" and h["referrer-policy"] == "no-referrer"
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    csp = h["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_get_and_head_consume_nothing(web):
    p, http, cert = web
    path = new_link(p, cert)
    for _ in range(3):
        assert http.head(path).status_code == 200
        page = http.get(path, headers={"User-Agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"})
        assert page.status_code == 200
    assert_locked_down(page)
    assert "alice@example.com" in page.text and cert["serial"] in page.text and "expires at" in page.text
    assert '<html lang="en">' in page.text and "<form" in page.text
    assert p.store.one("SELECT used_at FROM links")["used_at"] is None


def test_post_releases_once_from_a_browser_sending_origin_null(web):
    p, http, cert = web
    path = new_link(p, cert)
    token = csrf(http.get(path).text)
    secret = p.vault.retrieve(ref=cert["vault_ref"], reason="test").password
    shown = http.post(path, data={"csrf": token}, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert shown.status_code == 200 and secret in shown.text
    assert_locked_down(shown)
    assert 'id="copy"' in shown.text and "<script>" in shown.text
    again = http.post(path, data={"csrf": token}, headers={"Origin": "null"})
    assert again.status_code == 410 and secret not in again.text
    assert "/smime password" in again.text, "the page says how to get a new link"


def test_our_own_origin_is_accepted_and_other_sites_are_refused(web):
    p, http, cert = web
    path = new_link(p, cert, "pfx")
    token = csrf(http.get(path).text)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = http.post(path, data={"csrf": token}, headers=headers)
        assert refused.status_code == 403
        assert_locked_down(refused)
    ours = http.post(path, data={"csrf": token}, headers={"Origin": p.settings.web.public_url})
    assert ours.status_code == 200 and ours.headers["content-type"] == "application/x-pkcs12"
    assert 'filename="alice@example.com.p12"' in ours.headers["content-disposition"]
    assert ours.headers["cache-control"] == "no-store"


def test_a_wrong_csrf_token_is_refused_and_the_link_still_works(web):
    p, http, cert = web
    path = new_link(p, cert)
    assert http.post(path, data={"csrf": "0" * 64}).status_code == 403
    assert http.post(path, data={}).status_code == 403
    assert http.post(path, data={"csrf": csrf(http.get(path).text)}).status_code == 200


def test_an_expired_link_says_so_and_how_to_get_a_new_one(web):
    p, http, cert = web
    path = new_link(p, cert)
    token = csrf(http.get(path).text)
    with p.store.write() as conn:
        conn.execute("UPDATE links SET expires_at = ?", (iso(p.clock.now() - timedelta(seconds=1)),))
    page = http.get(path)
    assert page.status_code == 410 and "expired" in page.text and "/smime" in page.text
    assert http.post(path, data={"csrf": token}).status_code == 410


def test_failed_lookups_are_rate_limited_per_client(web):
    p, http, cert = web
    good = new_link(p, cert)
    limit = p.settings.links.failed_lookups_per_minute
    for i in range(limit):
        assert http.get(f"/links/{'A' * 42}{i % 10}").status_code == 404
    blocked = http.get(good)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert http.post(good, data={"csrf": "x"}).status_code == 429
    assert p.store.one("SELECT used_at FROM links")["used_at"] is None
