"""Sectigo Certificate Manager (SCM) S/MIME behind the CertificateAuthority port.

``ca.backend = "sectigo"``. Header login (``login``, ``password``, ``customerUri``)
against ``[ca.sectigo] base_url`` (default https://cert-manager.com/api); enroll with
our CSR and the mailbox, then collect while SCM answers "pending" (code -183). The
request's idempotency key travels in an SCM custom field. See docs/ca-backends.md.

UNCONFIRMED and therefore configurable or defensive:
- looking an order up by its marker needs the certificate list (``GET /smime/v2``)
  and details (``GET /smime/v2/{id}``) to show custom fields; ``order_lookup`` is off
  by default, so an unknown outcome parks the request for an admin instead;
- withdrawing a pending order (no cancel endpoint is documented; ``cancel`` revokes
  the order, which SCM may refuse for a pending one);
- rate limits (none documented: a 429 without ``Retry-After`` waits 5 s) and every
  error code other than -183 (pending) and -192 (revoked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from integrations.ca.common import (
    ORDER_POST_ANSWERS,
    REFUSALS,
    AmbiguousAfterSendTransport,
    MarkerCache,
    get_json,
    load_bundle,
    read_trust_anchors,
    split_bundle,
    trust_anchor_problems,
)
from integrations.ca.sectigo_api import (
    PENDING_CODE,
    REVOKED_CODE,
    describe_error,
    enroll_body,
    error_of,
    marker_for,
    marker_values,
    order_from_state,
    refusal,
    revocation_text,
    settings_problems,
)
from integrations.http import RetryPolicy, VendorClient
from pipeline.errors import LookupUnsupported, OutcomeUnknown, PermanentFailure, RetryLater
from pipeline.ports import (
    CertificateAuthority,
    Clock,
    IssuedCertificate,
    Order,
    OrderStatus,
    RevocationReason,
    Subscriber,
)
from pipeline.settings import SectigoSettings, Settings

log = logging.getLogger(__name__)

LOOKUP_MAX_CERTIFICATES = 500  # beyond this, give up and let an admin reconcile
LOOKUP_PAGE = 100
RATE_LIMIT_WAIT = 5.0


class SectigoCA:
    """SCM REST client shaped as the CA port. The constructor does no I/O."""

    name = "sectigo"

    def __init__(
        self,
        settings: SectigoSettings,
        *,
        login: str,
        password: str,
        trust_anchor_paths: Sequence[str] = (),
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._has_credentials = bool(login and password)
        self._anchors = list(trust_anchor_paths)
        self.base_url = (base_url or settings.base_url).rstrip("/")
        self._marker_cache = MarkerCache()
        self._http = VendorClient(
            vendor="Sectigo",
            base_url=self.base_url,
            timeout=settings.timeout_seconds,
            headers={
                "login": login,
                "password": password,
                "customerUri": settings.customer_uri,
                "Accept": "application/json",
            },
            policy=policy or RetryPolicy(default_retry_after=RATE_LIMIT_WAIT, sleep=sleep),
            describe_error=describe_error,
            transport=AmbiguousAfterSendTransport(transport),
        )

    def close(self) -> None:
        self._http.close()

    # -- doctor ---------------------------------------------------------------

    def check(self) -> list[str]:
        s = self.settings
        problems = settings_problems(s) + trust_anchor_problems(self._anchors)
        if not self._has_credentials:
            return [*problems, "Sectigo credentials are missing: set SECTIGO_LOGIN and SECTIGO_PASSWORD."]
        try:
            types = self._types()
        except RetryLater as exc:
            return [*problems, f"Cannot reach Sectigo at {self.base_url}: {exc.admin_detail}"]
        except PermanentFailure as exc:
            return [*problems, f"Sectigo refused the check: {exc.admin_detail}"]
        chosen = next((t for t in types if t.get("id") == s.cert_type), None)
        if chosen is None:
            offered = ", ".join(f"{t.get('id')} ({t.get('name')})" for t in types) or "none"
            problems.append(
                f"Sectigo certificate type {s.cert_type} is not available to organization {s.org_id}; "
                f"available: {offered}."
            )
        elif s.term not in (chosen.get("terms") or []):
            problems.append(
                f"[ca.sectigo] term {s.term} is not offered by certificate type {s.cert_type}; "
                f"offered: {', '.join(map(str, chosen.get('terms') or []))} days."
            )
        return problems

    def describe(self) -> list[str]:
        s = self.settings
        lines = [
            f"Sectigo Certificate Manager at {self.base_url}, customer {s.customer_uri or '(not set)'}, "
            f"organization {s.org_id}",
            "order lookup by marker: " + ("on" if s.order_lookup else "off (unknown outcomes are parked for an admin)"),
        ]
        try:
            types = self._types()
        except (RetryLater, PermanentFailure) as exc:
            return [*lines, f"could not list certificate types: {exc.admin_detail}"]
        lines.append(f"certificate types available to organization {s.org_id}:")
        for t in types:
            mark = " (configured)" if t.get("id") == s.cert_type else ""
            terms = ", ".join(map(str, t.get("terms") or []))
            lines.append(f"  {t.get('id')}: {t.get('name')}, terms {terms} days{mark}")
        return lines

    def _types(self) -> list[dict[str, Any]]:
        params = {"organizationId": self.settings.org_id} if self.settings.org_id else {}
        response, types = get_json(self._http, "smime/v1/types", params=params, ok=REFUSALS)
        if response.status_code >= 400:
            raise refusal(response, "listing certificate types")
        if not isinstance(types, list):
            raise RetryLater("Sectigo: certificate types answer is not a list")
        return [t for t in types if isinstance(t, dict)]

    # -- the port -------------------------------------------------------------

    def submit(self, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str) -> Order:
        body = enroll_body(self.settings, csr_pem=csr_pem, subscriber=subscriber, idempotency_key=idempotency_key)
        response = self._http.request("POST", "smime/v1/enroll", idempotent=False, ok=ORDER_POST_ANSWERS, json=body)
        if response.status_code >= 500:
            raise OutcomeUnknown(f"Sectigo answered {response.status_code} to enroll: {describe_error(response)}")
        if response.status_code >= 400:
            raise refusal(response, f"the enrollment of {subscriber.mailbox}")
        try:
            data = response.json()
            order_id = str(data.get("backendCertId") or data["orderNumber"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OutcomeUnknown("Sectigo accepted the enrollment but the answer had no readable id") from None
        log.info("Sectigo enrollment %s placed for %s", order_id, subscriber.mailbox)
        return Order(order_id, OrderStatus.PENDING, detail=f"Sectigo enrollment {order_id} placed")

    def find_order(self, *, idempotency_key: str) -> Order | None:
        if not self.settings.order_lookup:
            raise LookupUnsupported("[ca.sectigo] order_lookup is off")
        marker = marker_for(idempotency_key)
        position = scanned = 0
        while True:
            params = {"size": LOOKUP_PAGE, "position": position, "certTypeId": self.settings.cert_type}
            _, items = get_json(self._http, "smime/v2", params=params)
            if not isinstance(items, list):
                raise RetryLater("Sectigo: certificate list answer is not a list")
            for item in items:
                if not isinstance(item, dict) or str(item.get("state", "")).lower() == "expired":
                    continue
                scanned += 1
                if scanned > LOOKUP_MAX_CERTIFICATES:
                    raise LookupUnsupported(
                        f"Sectigo: {LOOKUP_MAX_CERTIFICATES} certificates scanned without the marker"
                    )
                cert_id = str(item.get("backendCertId") or item.get("id"))
                if marker in self._markers_of(cert_id):
                    details = self._details(cert_id)
                    order_id = str(details.get("backendCertId") or details.get("id"))
                    return order_from_state(order_id, str(details.get("state", "")))
            if len(items) < LOOKUP_PAGE:
                return None
            position += len(items)

    def poll(self, *, order_id: str) -> Order:
        response = self._collect(order_id, "x509CO")
        if response.status_code < 400:
            try:
                load_bundle(response.content)
            except ValueError:
                raise RetryLater(f"Sectigo: unreadable certificate from collecting {order_id}") from None
            return Order(order_id, OrderStatus.ISSUED, detail=f"Sectigo certificate {order_id} is issued")
        code, words = error_of(response)
        if code == PENDING_CODE:
            return Order(order_id, OrderStatus.PENDING, detail=f"Sectigo: {words or 'pending'}")
        if code == REVOKED_CODE:
            return order_from_state(order_id, "revoked")
        if response.status_code in (401, 403):
            raise refusal(response, f"collecting {order_id}")
        # Some other refusal (a rejected request, for one): the certificate's state says which.
        state = self._state(order_id)
        if state is None:
            raise refusal(response, f"collecting {order_id}")
        order = order_from_state(order_id, state)
        return Order(
            order.order_id,
            order.status,
            detail=f"{order.detail}; collect said: {words}",
            user_message=order.user_message,
        )

    def fetch(self, *, order_id: str) -> IssuedCertificate:
        response = self._collect(order_id, "x509")  # certificate and chain, PEM
        if response.status_code >= 400:
            code, words = error_of(response)
            if code == PENDING_CODE:
                raise RetryLater(f"Sectigo certificate {order_id} is not issued yet: {words}")
            raise refusal(response, f"collecting {order_id}")
        leaf, chain = split_bundle(response.content, vendor="Sectigo", order_id=order_id)
        return IssuedCertificate(leaf, chain)

    def revoke(self, *, order_id: str, serial: str, reason: RevocationReason) -> None:
        body = {"reason": revocation_text(reason, serial)}
        # A repeated revocation is harmless, so a lost answer may simply be retried.
        path = f"smime/v1/revoke/order/{order_id}"
        response = self._http.request("POST", path, idempotent=True, ok=REFUSALS, json=body)
        if response.status_code >= 400:
            if error_of(self._collect(order_id, "x509CO"))[0] == REVOKED_CODE:
                return  # already revoked
            raise refusal(response, f"revoking {order_id}")

    def cancel(self, *, order_id: str) -> None:
        collected = self._collect(order_id, "x509CO")
        if collected.status_code < 400 or error_of(collected)[0] != PENDING_CODE:
            return  # issued, revoked or otherwise final: nothing left to withdraw
        body = {"reason": "The request was cancelled in CertPortal before issuance"}
        path = f"smime/v1/revoke/order/{order_id}"
        response = self._http.request("POST", path, idempotent=True, ok=REFUSALS, json=body)
        if response.status_code >= 400:
            failure = refusal(response, f"withdrawing pending order {order_id}")
            raise PermanentFailure(
                failure.user_reason, admin_detail=failure.admin_detail + "; reject the request in SCM by hand"
            )

    def trust_anchors(self) -> list[bytes]:
        return read_trust_anchors(self._anchors)

    # -- helpers ----------------------------------------------------------------

    def _collect(self, order_id: str, fmt: str) -> httpx.Response:
        return self._http.request("GET", f"smime/v1/collect/{order_id}", params={"format": fmt}, ok=REFUSALS)

    def _markers_of(self, cert_id: str) -> frozenset[str]:
        known = self._marker_cache.get(cert_id)
        if known is None:
            values = marker_values(self._details(cert_id))
            if values is None:
                raise LookupUnsupported("Sectigo certificate details show no custom fields; cannot look orders up")
            self._marker_cache.put(cert_id, values)
            known = frozenset(values)
        return known

    def _details(self, cert_id: str) -> dict[str, Any]:
        response, details = get_json(self._http, f"smime/v2/{cert_id}", ok=REFUSALS)
        if response.status_code >= 400:
            raise LookupUnsupported(f"Sectigo certificate details unavailable: {describe_error(response)}")
        if not isinstance(details, dict):
            raise RetryLater(f"Sectigo: details of {cert_id} are not an object")
        return details

    def _state(self, order_id: str) -> str | None:
        response, details = get_json(self._http, f"smime/v2/{order_id}", ok=REFUSALS)
        if response.status_code >= 400:
            return None
        return str(details.get("state", "")) if isinstance(details, dict) else None


def from_settings(settings: Settings, *, clock: Clock) -> CertificateAuthority:
    """Build the adapter from loaded settings; cheap, no network. SCM needs no clock."""
    return SectigoCA(
        settings.ca.sectigo,
        login=settings.secrets.sectigo_login,
        password=settings.secrets.sectigo_password,
        trust_anchor_paths=settings.ca.trust_anchors,
    )
