"""``/links/{token}``: GET shows what the link is for and consumes nothing; a form POST releases it once.

The POST must carry the CSRF token of the confirmation page. Browsers send
``Origin: null`` for it (the page's ``Referrer-Policy: no-referrer`` asks them to),
so a missing or ``null`` Origin is accepted and any other Origin must be ours.
Failed lookups are rate limited per client. Database and vault work run off the
event loop.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bot.web import pages
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError
from pipeline.links import FailedLookupLimiter, LinkRefused, LinkState, csrf_token, inspect, release

log = logging.getLogger("certportal.web.links")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": pages.CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STATUS = {LinkState.UNKNOWN: 404, LinkState.USED: 410, LinkState.EXPIRED: 410, LinkState.REVOKED: 410}


class LinkPages:
    def __init__(self, p: Pipeline, limiter: FailedLookupLimiter | None = None) -> None:
        self.p = p
        self.limiter = limiter or FailedLookupLimiter(p.settings.links.failed_lookups_per_minute)
        parts = urlsplit(p.settings.web.public_url)
        self.origin = f"{parts.scheme}://{parts.netloc}".lower()

    async def get(self, request: Request) -> Response:
        client = _client(request)
        wait = self.limiter.blocked(client)
        if wait:
            return _html(pages.too_many(), 429, {"Retry-After": str(int(wait) + 1)})
        token = request.path_params["token"]
        view = await anyio.to_thread.run_sync(inspect, self.p, token)
        log.info(
            "link page %s kind=%s serial=%s agent=%r",
            view.state,
            view.kind,
            view.serial,
            request.headers.get("user-agent", "")[:120],
        )
        if view.state is not LinkState.VALID:
            if view.state is LinkState.UNKNOWN:
                self.limiter.failed(client)
            return _html(pages.unavailable(view.state), STATUS[view.state])
        return _html(pages.confirm(view, csrf=csrf_token(self.p, token)), 200)

    async def post(self, request: Request) -> Response:
        client = _client(request)
        wait = self.limiter.blocked(client)
        if wait:
            return _html(pages.too_many(), 429, {"Retry-After": str(int(wait) + 1)})
        if not self._same_site(request):
            log.warning("link form posted from another site (origin=%r)", request.headers.get("origin"))
            return _html(pages.refused(), 403)
        form = await request.form(max_files=0, max_fields=5)
        csrf = form.get("csrf")
        token = request.path_params["token"]
        try:
            released = await anyio.to_thread.run_sync(
                lambda: release(self.p, token=token, csrf=csrf if isinstance(csrf, str) else "", client=client)
            )
        except LinkRefused as exc:
            if exc.state == "forged":
                self.limiter.failed(client)
                return _html(pages.refused(), 403)
            if exc.state == LinkState.UNKNOWN:
                self.limiter.failed(client)
            state = LinkState(exc.state)
            return _html(pages.unavailable(state), STATUS.get(state, 410))
        except CertPortalError as exc:
            log.warning("link secret could not be fetched from the vault: %s", type(exc).__name__)
            return _html(pages.vault_down(), 503, {"Retry-After": "60"})
        log.info("link released kind=%s serial=%s", released.kind, released.serial)
        if released.kind == "password":
            return _html(pages.password(mailbox=released.mailbox, secret=released.password), 200)
        filename = re.sub(r"[^A-Za-z0-9@._-]", "_", released.mailbox) + ".p12"
        return Response(
            released.pfx,
            media_type="application/x-pkcs12",
            headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _same_site(self, request: Request) -> bool:
        origin = (request.headers.get("origin") or "null").lower()
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            return False
        return origin == "null" or origin == self.origin


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _html(body: str, status: int, extra: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(extra or {})})
