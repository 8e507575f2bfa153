"""Helpers the commercial CA adapters share (DigiCert and Sectigo).

Splitting a downloaded bundle into leaf and chain, reading the configured trust
anchors, and an httpx transport that keeps an order from being placed twice when a
connection breaks after the request went out.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from integrations.http import VendorClient
from pipeline.errors import PermanentFailure, RetryLater

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
SETUP_USER_REASON = "The certificate service is not set up correctly. IT has been told and will fix it."
NAMES_USER_REASON = (
    "Your first and last name are needed for this kind of certificate but are missing from your profile. "
    "Please add them (or ask IT to) and request again."
)
# Every order carries this plus the request's idempotency key, so a lookup after
# a crash or an unknown outcome can recognise it at either CA.
MARKER_PREFIX = "certportal-order-key:"


def marker_for(idempotency_key: str) -> str:
    """The text stored on the order so a later lookup can recognise it."""
    return MARKER_PREFIX + idempotency_key


def load_bundle(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM certificates, a PEM PKCS#7 or a DER PKCS#7 / DER certificate.

    Raises ValueError when nothing parses.
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        return [x509.load_pem_x509_certificate(m.group(0)) for m in _PEM_CERT.finditer(data)]
    if b"-----BEGIN PKCS7-----" in data:
        return list(pkcs7.load_pem_pkcs7_certificates(data))
    try:
        return list(pkcs7.load_der_pkcs7_certificates(data))
    except ValueError:
        return [x509.load_der_x509_certificate(data)]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def split_bundle(data: bytes, *, vendor: str, order_id: str) -> tuple[bytes, tuple[bytes, ...]]:
    """Return (leaf PEM, chain PEMs issuing CA first, self-signed roots left out).

    Vendors differ in the order they put certificates in (DigiCert's ``pem_all`` is
    documented as root + intermediate + leaf), so the chain is rebuilt from issuer
    names rather than trusted positionally. Roots come from ``[ca] trust_anchors``.

    Raises RetryLater for an unreadable body (a cut-off download) and
    PermanentFailure when the bundle holds no single end-entity certificate.
    """
    try:
        certs = load_bundle(data)
    except ValueError:
        raise RetryLater(f"{vendor}: the certificate download for order {order_id} could not be read") from None
    leaves = [c for c in certs if not _is_ca(c)]
    if len(leaves) != 1:
        raise PermanentFailure(
            "The certificate service returned something unexpected. IT has been told and will follow up.",
            admin_detail=f"{vendor}: download for order {order_id} held {len(leaves)} end-entity certificates",
        )
    leaf = leaves[0]
    by_subject = {c.subject.public_bytes(): c for c in certs if _is_ca(c)}
    chain: list[x509.Certificate] = []
    current = leaf
    while current.issuer != current.subject:
        parent = by_subject.pop(current.issuer.public_bytes(), None)
        if parent is None or parent.issuer == parent.subject:
            break
        chain.append(parent)
        current = parent
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem), tuple(c.public_bytes(pem) for c in chain)


def get_json(
    http: VendorClient, path: str, *, params: dict[str, Any] | None = None, ok: tuple[int, ...] = ()
) -> tuple[httpx.Response, Any]:
    """GET and decode JSON, asking again when a 2xx body does not parse (a cut-off read).

    An ``ok`` error answer comes back with None for the body. Raises RetryLater,
    PermanentFailure (from VendorClient).
    """
    policy = http.policy
    for attempt in range(policy.attempts):
        response = http.request("GET", path, params=params, ok=ok)
        if response.status_code >= 400:
            return response, None
        try:
            return response, response.json()
        except ValueError:
            if attempt + 1 < policy.attempts:
                policy.sleep(policy.backoff(attempt))
    raise RetryLater(f"{http.vendor}: malformed JSON from GET {path}")


class MarkerCache:
    """Markers seen on orders, by order id. An order's marker never changes, so a lookup
    need not read the same order twice; bounded so a long-running worker stays small."""

    def __init__(self, size: int = 5000) -> None:
        self._size = size
        self._seen: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def get(self, order_id: str) -> frozenset[str] | None:
        with self._lock:
            return self._seen.get(order_id)

    def put(self, order_id: str, markers: set[str]) -> None:
        with self._lock:
            if len(self._seen) >= self._size:
                self._seen.pop(next(iter(self._seen)))
            self._seen[order_id] = frozenset(markers)


def read_trust_anchors(paths: Sequence[str]) -> list[bytes]:
    """Each certificate in the ``[ca] trust_anchors`` files as its own PEM.

    Raises PermanentFailure naming the file when one cannot be read.
    """
    anchors: list[bytes] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
            certs = load_bundle(data)
        except (OSError, ValueError) as exc:
            raise PermanentFailure(
                SETUP_USER_REASON, admin_detail=f"[ca] trust_anchors: cannot read a certificate from {path}: {exc}"
            ) from None
        anchors.extend(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return anchors


def trust_anchor_problems(paths: Sequence[str]) -> list[str]:
    """Plain-language problems with ``[ca] trust_anchors`` for ``certportal doctor``."""
    if not paths:
        return ["[ca] trust_anchors is empty: issued certificates cannot be checked against the CA's root."]
    try:
        read_trust_anchors(paths)
    except PermanentFailure as exc:
        return [exc.admin_detail]
    return []


class AmbiguousAfterSendTransport(httpx.BaseTransport):
    """Turns read/write errors on POST into ``RemoteProtocolError``.

    ``VendorClient`` retries ``ReadError``/``WriteError`` as connection problems,
    but on an order-placing POST the request may already have reached the CA (a
    reset connection after the body went out). ``RemoteProtocolError`` is what
    ``VendorClient`` reports as ``OutcomeUnknown`` for non-idempotent calls, so the
    pipeline looks the order up instead of ordering again.
    """

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except (httpx.ReadError, httpx.WriteError) as exc:
            if request.method == "POST":
                raise httpx.RemoteProtocolError(f"{type(exc).__name__} after sending", request=request) from None
            raise

    def close(self) -> None:
        self._inner.close()


# Responses an adapter reads itself instead of letting VendorClient map them: every
# 4xx but 429 (VendorClient waits on 429). Order-placing calls also take 5xx, because
# a 5xx after a POST does not prove the order was not placed.
REFUSALS: tuple[int, ...] = tuple(code for code in range(400, 500) if code != 429)
ORDER_POST_ANSWERS: tuple[int, ...] = REFUSALS + tuple(range(500, 600))
