"""DigiCert CertCentral Secure Email (S/MIME) behind the CertificateAuthority port.

``ca.backend = "digicert"``. Orders go to ``POST /order/certificate/{product}`` with
our CSR (DigiCert only uses its public key) and carry the request's idempotency key
in ``comments``. See docs/ca-backends.md for setup and for what is unconfirmed.

UNCONFIRMED and therefore configurable or defensive:
- whether order info echoes ``comments`` (lookup accepts comments, notes or custom
  fields and refuses to conclude "no order" if none is echoed); ``order_lookup``
  turns the lookup off, in which case an unknown outcome parks the request;
- ``dual_use`` / ``key_management`` usage names (``usage``), which validity field
  Secure Email honours (``validity_years`` is sent), the revocation-reason spellings
  other than ``superseded``, and ``GET /user/me`` / ``GET /product`` as doctor checks;
- the rate-limit window: with no ``Retry-After`` a 429 waits 5 s (the short window).
"""

from __future__ import annotations

import datetime as dt
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
    read_trust_anchors,
    split_bundle,
    trust_anchor_problems,
)
from integrations.ca.digicert_orders import (
    PRODUCTS,
    REVOCATION_REASONS,
    describe_error,
    marker_for,
    markers_on,
    order_body,
    order_from_info,
    refusal,
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
from pipeline.settings import DigiCertSettings, Settings

log = logging.getLogger(__name__)

LOOKUP_WINDOW = dt.timedelta(days=30)  # orders older than this are never ours to resume
LOOKUP_MAX_ORDERS = 500  # beyond this, give up and let an admin reconcile
LOOKUP_PAGE = 100
# No Retry-After is documented for 429; 5 s clears the 100-per-5-seconds window.
RATE_LIMIT_WAIT = 5.0


class _UTCClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class DigiCertCA:
    """CertCentral Services API v2 client shaped as the CA port. The constructor does no I/O."""

    name = "digicert"

    def __init__(
        self,
        settings: DigiCertSettings,
        *,
        api_key: str,
        trust_anchor_paths: Sequence[str] = (),
        clock: Clock | None = None,
        signature_hash: str = "sha256",
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._has_key = bool(api_key)
        self._anchors = list(trust_anchor_paths)
        self._clock = clock or _UTCClock()
        self._signature_hash = signature_hash
        self.base_url = (base_url or settings.base_url).rstrip("/")
        self._marker_cache = MarkerCache()
        self._http = VendorClient(
            vendor="DigiCert",
            base_url=self.base_url,
            timeout=settings.timeout_seconds,
            headers={"X-DC-DEVKEY": api_key, "Content-Type": "application/json", "Accept": "application/json"},
            policy=policy or RetryPolicy(default_retry_after=RATE_LIMIT_WAIT, sleep=sleep),
            describe_error=describe_error,
            transport=AmbiguousAfterSendTransport(transport),
        )

    def close(self) -> None:
        self._http.close()

    # -- doctor ---------------------------------------------------------------

    def check(self) -> list[str]:
        problems = settings_problems(self.settings) + trust_anchor_problems(self._anchors)
        if not self._has_key:
            return [*problems, "The DigiCert API key is missing: set DIGICERT_API_KEY or [ca.digicert] api_key_file."]
        try:
            me = self._http.request("GET", "user/me", ok=REFUSALS)
            if me.status_code in (401, 403):
                return [*problems, f"DigiCert refused the API key ({describe_error(me)}). Check DIGICERT_API_KEY."]
            if self.settings.organization_id:
                org = self._http.request("GET", f"organization/{self.settings.organization_id}", ok=REFUSALS)
                if org.status_code >= 400:
                    problems.append(
                        f"DigiCert organization {self.settings.organization_id} is not in this account "
                        f"({describe_error(org)})."
                    )
            if self.settings.product not in self._enabled_products():
                problems.append(
                    f"The DigiCert product {self.settings.product} is not enabled for this account; "
                    "ask your DigiCert account manager to enable it."
                )
        except RetryLater as exc:
            problems.append(f"Cannot reach DigiCert at {self.base_url}: {exc.admin_detail}")
        except PermanentFailure as exc:
            problems.append(f"DigiCert check failed: {exc.admin_detail}")
        return problems

    def describe(self) -> list[str]:
        s = self.settings
        lines = [
            f"DigiCert CertCentral at {self.base_url}",
            f"product {s.product}, profile {s.profile_type}, usage {s.usage}, {s.validity_years} year(s), "
            f"organization {s.organization_id or 'none'}, skip_approval {'on' if s.skip_approval else 'off'}",
            "order lookup by marker: " + ("on" if s.order_lookup else "off (unknown outcomes are parked for an admin)"),
        ]
        try:
            enabled = sorted(p for p in self._enabled_products() if p in PRODUCTS)
            lines.append("Secure Email products enabled: " + (", ".join(enabled) or "none"))
        except (RetryLater, PermanentFailure):
            pass
        return lines

    def _enabled_products(self) -> set[str]:
        _, data = get_json(self._http, "product")
        products = data.get("products") if isinstance(data, dict) else None
        return {str(p.get("name_id")) for p in products or [] if isinstance(p, dict)}

    # -- the port -------------------------------------------------------------

    def submit(self, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str) -> Order:
        body = order_body(
            self.settings,
            csr_pem=csr_pem,
            subscriber=subscriber,
            idempotency_key=idempotency_key,
            signature_hash=self._signature_hash,
        )
        path = f"order/certificate/{self.settings.product}"
        response = self._http.request("POST", path, idempotent=False, ok=ORDER_POST_ANSWERS, json=body)
        if response.status_code >= 500:
            # The order may exist; only a lookup can tell.
            raise OutcomeUnknown(f"DigiCert answered {response.status_code} to POST {path}: {describe_error(response)}")
        if response.status_code >= 400:
            raise refusal(response, f"the order for {subscriber.mailbox}")
        try:
            data = response.json()
            order_id = str(data["id"])
        except (ValueError, KeyError, TypeError):
            raise OutcomeUnknown(f"DigiCert accepted POST {path} but the answer had no readable order id") from None
        log.info("DigiCert order %s placed for %s", order_id, subscriber.mailbox)
        if data.get("certificate_id"):
            return Order(order_id, OrderStatus.ISSUED, detail="DigiCert issued the certificate at once")
        return Order(order_id, OrderStatus.PENDING, detail=f"DigiCert order {order_id} placed")

    def find_order(self, *, idempotency_key: str) -> Order | None:
        if not self.settings.order_lookup:
            raise LookupUnsupported("[ca.digicert] order_lookup is off")
        marker = marker_for(idempotency_key)
        cutoff = self._clock.now() - LOOKUP_WINDOW
        offset = scanned = 0
        while True:
            params: dict[str, Any] = {
                "filters[product_name_id]": self.settings.product,
                "sort": "-date_created",
                "offset": offset,
                "limit": LOOKUP_PAGE,
            }
            _, page = get_json(self._http, "order/certificate", params=params)
            orders = page.get("orders") if isinstance(page, dict) else None
            if not isinstance(orders, list):
                raise RetryLater("DigiCert: order listing without an orders list")
            recent = [o for o in orders if isinstance(o, dict) and not _older_than(o.get("date_created"), cutoff)]
            for item in recent:
                scanned += 1
                if scanned > LOOKUP_MAX_ORDERS:
                    raise LookupUnsupported(f"DigiCert: {LOOKUP_MAX_ORDERS} recent orders scanned without the marker")
                order_id = str(item.get("id"))
                if marker in self._markers_of(order_id):
                    return self._to_order(self._order_info(order_id))
            offset += len(orders)
            total = (page.get("page") or {}).get("total", 0)
            if not orders or not recent or offset >= int(total or 0):
                return None

    def poll(self, *, order_id: str) -> Order:
        return self._to_order(self._order_info(order_id))

    def fetch(self, *, order_id: str) -> IssuedCertificate:
        info = self._order_info(order_id)
        order = order_from_info(info)
        if order.status is OrderStatus.PENDING:
            raise RetryLater(f"DigiCert order {order_id} is not issued yet", delay=None)
        if order.status is not OrderStatus.ISSUED:
            raise PermanentFailure(order.user_message or "The certificate was not issued.", admin_detail=order.detail)
        certificate_id = (info.get("certificate") or {}).get("id")
        if not certificate_id:
            raise RetryLater(f"DigiCert order {order_id} is issued but names no certificate yet")
        path = f"certificate/{certificate_id}/download/format/pem_all"
        response = self._http.request("GET", path, ok=REFUSALS)
        if response.status_code >= 400:
            raise refusal(response, f"the download of order {order_id}")
        leaf, chain = split_bundle(response.content, vendor="DigiCert", order_id=order_id)
        return IssuedCertificate(leaf, chain)

    def revoke(self, *, order_id: str, serial: str, reason: RevocationReason) -> None:
        body = {
            "revocation_reason": REVOCATION_REASONS[reason],
            "comments": f"Revoked through CertPortal ({reason.value}), certificate serial {serial}",
            "skip_approval": self.settings.skip_approval,
        }
        response = self._http.request("PUT", f"order/certificate/{order_id}/revoke", ok=REFUSALS, json=body)
        if response.status_code >= 400:
            if str(self._order_info(order_id).get("status", "")).lower() == "revoked":
                return  # a repeat of a revocation that already went through
            raise refusal(response, f"the revocation of order {order_id}")
        try:
            awaiting = response.content and response.json().get("status") == "pending"
        except (ValueError, AttributeError):
            awaiting = False
        if awaiting:
            # Without an admin key and skip_approval, DigiCert files a revocation request instead.
            log.warning("DigiCert revocation of order %s awaits approval in CertCentral", order_id)

    def cancel(self, *, order_id: str) -> None:
        body = {"status": "canceled", "note": "The request was cancelled in CertPortal"}
        response = self._http.request("PUT", f"order/certificate/{order_id}/status", ok=REFUSALS, json=body)
        if response.status_code == 404 or response.status_code < 400:
            return
        if order_from_info(self._order_info(order_id)).status is not OrderStatus.PENDING:
            return  # already final: nothing left to cancel
        raise refusal(response, f"cancelling order {order_id}")

    def trust_anchors(self) -> list[bytes]:
        return read_trust_anchors(self._anchors)

    # -- helpers ----------------------------------------------------------------

    def _markers_of(self, order_id: str) -> frozenset[str]:
        known = self._marker_cache.get(order_id)
        if known is None:
            markers = markers_on(self._order_info(order_id))
            if markers is None:
                raise LookupUnsupported("DigiCert order info does not echo order comments; cannot look orders up")
            self._marker_cache.put(order_id, markers)
            known = frozenset(markers)
        return known

    def _order_info(self, order_id: str) -> dict[str, Any]:
        response, info = get_json(self._http, f"order/certificate/{order_id}", ok=REFUSALS)
        if response.status_code >= 400:
            raise refusal(response, f"reading order {order_id}")
        if not isinstance(info, dict):
            raise RetryLater(f"DigiCert: order {order_id} answer is not an object")
        return info

    def _to_order(self, info: dict[str, Any]) -> Order:
        order = order_from_info(info)
        if order.status is OrderStatus.PENDING and self._awaiting_validation(order.order_id):
            return order_from_info(info, awaiting_validation=True)
        return order

    def _awaiting_validation(self, order_id: str) -> bool:
        response, data = get_json(self._http, f"order/certificate/{order_id}/email-validation", ok=REFUSALS)
        if response.status_code >= 400:
            return False  # products without mailbox validation have nothing to report
        emails = data.get("emails") if isinstance(data, dict) else None
        return isinstance(emails, list) and any(isinstance(e, dict) and e.get("status") != "validated" for e in emails)


def _older_than(value: object, cutoff: dt.datetime) -> bool:
    if not isinstance(value, str):
        return False
    try:
        created = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return created < cutoff


def from_settings(settings: Settings, *, clock: Clock) -> CertificateAuthority:
    """Build the adapter from loaded settings; cheap, no network."""
    return DigiCertCA(
        settings.ca.digicert,
        api_key=settings.secrets.digicert_api_key,
        trust_anchor_paths=settings.ca.trust_anchors,
        clock=clock,
        signature_hash=settings.crypto.signature_hash,
    )
