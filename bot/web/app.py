"""The ASGI app of ``certportal serve``: Slack at /slack/events, link pages, /healthz and the CA's /ca/* files."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import anyio.to_thread
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.web.link_pages import LinkPages
from bot.web.slack_endpoint import SlackEndpoint
from pipeline.context import Pipeline
from pipeline.links import FailedLookupLimiter

log = logging.getLogger("certportal.web")


@runtime_checkable
class PublishesCrl(Protocol):
    """A CA run by this service (the embedded one), which serves its CRL and issuing certificate itself."""

    def crl(self) -> x509.CertificateRevocationList: ...

    def issuing_certificate(self) -> x509.Certificate: ...


def build_web_app(
    p: Pipeline, *, slack: SlackEndpoint | None = None, limiter: FailedLookupLimiter | None = None
) -> Starlette:
    """``slack`` is the ``/slack/events`` endpoint (None without Slack, e.g. in Socket Mode or the demo)."""
    links = LinkPages(p, limiter)

    async def healthz(request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(p.store.one, "SELECT 1 AS ok")
        except Exception as exc:
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"ok": False}, status_code=503)
        return JSONResponse({"ok": True})

    async def crl(request: Request) -> Response:
        if not isinstance(p.ca, PublishesCrl):
            return Response("not found", status_code=404, media_type="text/plain")
        der = await anyio.to_thread.run_sync(lambda: p.ca.crl().public_bytes(serialization.Encoding.DER))  # type: ignore[attr-defined]
        return Response(der, media_type="application/pkix-crl", headers={"Cache-Control": "public, max-age=300"})

    async def issuer(request: Request) -> Response:
        if not isinstance(p.ca, PublishesCrl):
            return Response("not found", status_code=404, media_type="text/plain")
        der = await anyio.to_thread.run_sync(
            lambda: p.ca.issuing_certificate().public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]
        )
        return Response(der, media_type="application/pkix-cert", headers={"Cache-Control": "public, max-age=86400"})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/ca/crl", crl, methods=["GET"]),
        Route("/ca/issuer.crt", issuer, methods=["GET"]),
        Route("/links/{token}", links.get, methods=["GET"]),
        Route("/links/{token}", links.post, methods=["POST"]),
    ]
    if slack is not None:
        routes.append(Route("/slack/events", slack.handle, methods=["POST"]))
    return Starlette(routes=routes)
