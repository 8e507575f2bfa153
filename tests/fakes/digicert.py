"""A loopback fake of DigiCert CertCentral Services API v2 for Secure Email orders.

Paths live under ``/services/v2`` like the real base URL. It checks ``X-DC-DEVKEY``,
answers in DigiCert's shapes (``{"errors":[{"code","message"}]}`` on failure),
enforces the documented per-key rate limits (100 per 5 s, 1000 per 5 min; 429 with
no ``Retry-After``), and issues real certificates from the test CA so verify runs.

Orders are pending until polled ``pending_polls`` times (or issued at once with
``issue_mode = "immediate"``). With ``require_validation`` an order also waits for
its mailbox validation (``validate(order_id)``), reported at ``/email-validation``.

UNCONFIRMED in the reference, so chosen here and adjustable: which order-info field
echoes the order's ``comments`` (``echo_marker_as``: "comments", "notes" or None for
"not echoed at all"), the exact error codes, the Secure Email order-response example,
``GET /user/me`` and ``GET /product`` shapes, and which revocation reasons exist.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.fakes.server import Call, FakeServer, Fault, Handler, Reply
from tests.support.testca import TestCA

PRODUCTS = ("secure_email_mailbox", "secure_email_sponsor", "secure_email_organization")
REVOCATION_REASONS = ("unspecified", "key_compromise", "affiliation_changed", "superseded", "cessation_of_operation")
BASE = "/services/v2"


class SlidingWindowLimiter:
    """Requests per rolling window(s), per caller key; thread-safe."""

    def __init__(self, limits: list[tuple[int, float]]) -> None:
        self.limits = limits
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, who: str) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(who, deque())
            longest = max((w for _, w in self.limits), default=0.0)
            while seen and seen[0] < now - longest:
                seen.popleft()
            for limit, window in self.limits:
                if sum(1 for t in seen if t >= now - window) >= limit:
                    return False
            seen.append(now)
            return True


class VendorFake(FakeServer):
    """FakeServer plus a fast shutdown and a seeded mix of faults for soak tests."""

    def __init__(self) -> None:
        super().__init__()
        self._mix: list[Fault] = []
        self._mix_rate = 0.0
        self._mix_rng = random.Random(7)
        self.injected: Counter[str] = Counter()
        self.refuse_mailboxes: set[str] = set()  # orders for these are refused with a 400
        # Answers the client gave up on (timeouts) end in broken pipes: expected, not worth a traceback.
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def start(self) -> VendorFake:
        # A short shutdown poll keeps per-test teardown fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        super().start()
        return self

    def fail_mix(self, rate: float, faults: list[Fault], *, seed: int = 7) -> None:
        """Fail each call with probability ``rate``, with a fault drawn from ``faults``."""
        with self.lock:
            self._mix, self._mix_rate, self._mix_rng = list(faults), rate, random.Random(seed)

    def _take_fault(self, path: str) -> Fault | None:
        fault = super()._take_fault(path)
        with self.lock:
            if fault is None and self._mix and self._mix_rng.random() < self._mix_rate:
                fault = self._mix_rng.choice(self._mix)
                kind = "drop" if fault.drop else "timeout" if fault.delay else "malformed" if fault.malformed else ""
                self.injected[kind or str(fault.status)] += 1
        return fault


def errors(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"errors": [{"code": code, "message": message}]})


@dataclass
class FakeOrder:
    id: int
    product: str
    body: dict[str, Any]
    mailbox: str
    csr_pem: bytes
    created: dt.datetime
    status: str = "pending"
    polls: int = 0
    validated: bool = False
    certificate_id: int | None = None
    certificate: x509.Certificate | None = None
    revocation_reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def marker(self) -> str:
        return str(self.body.get("comments", ""))


class FakeDigiCert(VendorFake):
    def __init__(self, ca: TestCA, *, api_key: str = "dc-test-key", organizations: tuple[int, ...] = (123456,)) -> None:
        super().__init__()
        self.ca = ca
        self.api_key = api_key
        self.organizations = set(organizations)
        self.enabled_products = set(PRODUCTS)
        self.orders: dict[int, FakeOrder] = {}
        self.issue_mode = "pending"  # or "immediate"
        self.pending_polls = 1
        self.require_validation = False
        self.echo_marker_as: str | None = "comments"
        self.reject_next: str | None = None  # message for the next order POST (400)
        self.limiter = SlidingWindowLimiter([(100, 5.0), (1000, 300.0)])
        self._ids = itertools.count(1000)
        self._cert_ids = itertools.count(5000)
        r = self._route_v2
        r("POST", r"/order/certificate/(?P<product>[a-z_]+)", self._place)
        r("GET", r"/order/certificate", self._list)
        r("GET", r"/order/certificate/(?P<id>\d+)", self._info)
        r("GET", r"/order/certificate/(?P<id>\d+)/email-validation", self._email_validation)
        r("PUT", r"/order/certificate/(?P<id>\d+)/status", self._update_status)
        r("PUT", r"/order/certificate/(?P<id>\d+)/revoke", self._revoke)
        r("GET", r"/certificate/(?P<cid>\d+)/download/format/(?P<fmt>[a-z0-9_]+)", self._download)
        r("GET", r"/user/me", lambda c, g: Reply(200, {"id": 1, "username": "api-user", "status": "active"}))
        r("GET", r"/organization/(?P<id>\d+)", self._organization)
        r("GET", r"/product", self._products)

    # -- test controls ----------------------------------------------------------

    def validate(self, order_id: int | str) -> None:
        with self.lock:
            self.orders[int(order_id)].validated = True

    def reject(self, order_id: int | str) -> None:
        with self.lock:
            self.orders[int(order_id)].status = "rejected"

    def orders_per_marker(self) -> Counter[str]:
        with self.lock:
            return Counter(o.marker for o in self.orders.values())

    # -- plumbing ---------------------------------------------------------------

    def _route_v2(self, method: str, pattern: str, handler: Handler) -> None:
        def guarded(call: Call, groups: dict[str, str]) -> Reply:
            if call.headers.get("x-dc-devkey") != self.api_key:
                return errors(401, "access_denied", "Invalid API key.")
            if not self.limiter.allow(self.api_key):
                return errors(429, "request_limit_exceeded", "Service unavailable, please limit request volume")
            return handler(call, groups)

        self.route(method, BASE + pattern, guarded)

    def _order(self, order_id: str) -> FakeOrder | None:
        return self.orders.get(int(order_id))

    def _issue(self, order: FakeOrder) -> None:
        if order.certificate is None:
            days = 365 * int(order.body.get("validity_years") or 1)
            order.certificate = self.ca.issue(order.csr_pem, order.mailbox, days=min(days, 825))
            order.certificate_id = next(self._cert_ids)
        order.status = "issued"

    # -- endpoints ----------------------------------------------------------------

    def _place(self, call: Call, g: dict[str, str]) -> Reply:
        product = g["product"]
        if product not in PRODUCTS or product not in self.enabled_products:
            return errors(400, "invalid_product", f"Product {product} is not available on this account.")
        try:
            body = call.json()
            cert = body["certificate"]
            emails = cert["emails"]
            csr_pem = cert["csr"].encode()
            x509.load_pem_x509_csr(csr_pem)
        except (ValueError, KeyError, TypeError, AttributeError):
            return errors(400, "invalid_csr", "The CSR or a required certificate field is missing or malformed.")
        if not emails:
            return errors(400, "required_field", "certificate.emails is required.")
        if cert.get("profile_type") not in (None, "strict", "multipurpose"):
            return errors(400, "invalid_profile_type", "profile_type must be strict or multipurpose.")
        usage = (cert.get("usage_designation") or {}).get("primary_usage")
        if usage not in ("signing", "key_management", "dual_use"):
            return errors(400, "required_field", "certificate.usage_designation.primary_usage is required.")
        org = (body.get("organization") or {}).get("id")
        if product != "secure_email_mailbox" and org not in self.organizations:
            return errors(400, "invalid_organization", "A validated organization is required for this product.")
        if org is not None and org not in self.organizations:
            return errors(400, "invalid_organization", f"Organization {org} was not found.")
        individual = cert.get("individual") or {}
        if product == "secure_email_sponsor" and not (individual.get("first_name") and individual.get("last_name")):
            return errors(400, "required_field", "certificate.individual first_name and last_name are required.")
        if self.reject_next is not None:
            message, self.reject_next = self.reject_next, None
            return errors(400, "order_rejected", message)
        if emails[0] in self.refuse_mailboxes:
            return errors(400, "invalid_email", f"{emails[0]} cannot be included in a Secure Email order.")
        order = FakeOrder(
            id=next(self._ids),
            product=product,
            body=body,
            mailbox=emails[0],
            csr_pem=csr_pem,
            created=dt.datetime.now(dt.UTC),
        )
        self.orders[order.id] = order
        if self.issue_mode == "immediate":
            self._issue(order)
            assert order.certificate is not None
            pem = serialization.Encoding.PEM
            chain = [
                {"subject_common_name": order.mailbox, "pem": order.certificate.public_bytes(pem).decode()},
                {"subject_common_name": "CertPortal Test S/MIME Issuing CA", "pem": self.ca.issuing_pem.decode()},
                {"subject_common_name": "CertPortal Test Root", "pem": self.ca.root_pem.decode()},
            ]
            return Reply(201, {"id": order.id, "certificate_id": order.certificate_id, "certificate_chain": chain})
        return Reply(201, {"id": order.id, "requests": [{"id": order.id + 70000, "status": "pending"}]})

    def _summary(self, o: FakeOrder) -> dict[str, Any]:
        return {
            "id": o.id,
            "certificate": {"id": o.certificate_id, "common_name": o.mailbox, "signature_hash": "sha256"},
            "status": o.status,
            "date_created": o.created.isoformat(timespec="seconds"),
            "product": {"name_id": o.product, "type": "secure_email"},
            "product_name_id": o.product,
        }

    def _list(self, call: Call, g: dict[str, str]) -> Reply:
        q = {k: v[0] for k, v in call.query.items()}
        orders = list(self.orders.values())
        if "filters[product_name_id]" in q:
            orders = [o for o in orders if o.product == q["filters[product_name_id]"]]
        if "filters[status]" in q:
            orders = [o for o in orders if o.status == q["filters[status]"]]
        if "filters[email]" in q:
            orders = [o for o in orders if o.mailbox == q["filters[email]"]]
        sort = q.get("sort", "id")
        orders.sort(key=lambda o: (o.created, o.id) if "date_created" in sort else o.id, reverse=sort.startswith("-"))
        offset, limit = int(q.get("offset", 0)), min(int(q.get("limit", 1000)), 1000)
        page = orders[offset : offset + limit]
        return Reply(
            200,
            {
                "orders": [self._summary(o) for o in page],
                "page": {"total": len(orders), "limit": limit, "offset": offset},
            },
        )

    def _info(self, call: Call, g: dict[str, str]) -> Reply:
        o = self._order(g["id"])
        if o is None:
            return errors(404, "not_found", "Order not found.")
        o.polls += 1
        if o.status == "pending" and o.polls >= self.pending_polls and (o.validated or not self.require_validation):
            self._issue(o)
        info = self._summary(o)
        cert: dict[str, Any] = {
            "id": o.certificate_id,
            "common_name": o.mailbox,
            "emails": [o.mailbox],
            "profile_type": o.body["certificate"].get("profile_type", "strict"),
        }
        if o.certificate is not None:
            cert["serial_number"] = format(o.certificate.serial_number, "X")
            cert["valid_from"] = o.certificate.not_valid_before_utc.date().isoformat()
            cert["valid_till"] = o.certificate.not_valid_after_utc.date().isoformat()
            cert["date_issued"] = o.certificate.not_valid_before_utc.isoformat()
        info["certificate"] = cert
        if "organization" in o.body:
            info["organization"] = {"id": o.body["organization"]["id"]}
        if self.echo_marker_as == "comments":
            info["comments"] = o.marker
        elif self.echo_marker_as == "notes":
            info["notes"] = [{"id": i + 1, "text": t} for i, t in enumerate([o.marker, *o.notes])]
        return Reply(200, info)

    def _email_validation(self, call: Call, g: dict[str, str]) -> Reply:
        o = self._order(g["id"])
        if o is None:
            return errors(404, "not_found", "Order not found.")
        validated = o.validated or not self.require_validation or o.status == "issued"
        return Reply(
            200,
            {
                "delivery_options": ["api", "browser"],
                "emails": [
                    {
                        "email": o.mailbox,
                        "status": "validated" if validated else "unvalidated",
                        "date_emailed": o.created.date().isoformat(),
                    }
                ],
            },
        )

    def _update_status(self, call: Call, g: dict[str, str]) -> Reply:
        o = self._order(g["id"])
        if o is None:
            return errors(404, "not_found", "Order not found.")
        body = call.json() or {}
        if body.get("status") != "canceled":
            return errors(400, "invalid_status", "Only status canceled is accepted.")
        if o.status not in ("pending", "waiting_pickup"):
            return errors(400, "invalid_status", f"An order in status {o.status} cannot be canceled.")
        o.status = "canceled"
        o.notes.append(str(body.get("note", "")))
        return Reply(204)

    def _revoke(self, call: Call, g: dict[str, str]) -> Reply:
        o = self._order(g["id"])
        if o is None:
            return errors(404, "not_found", "Order not found.")
        body = call.json() or {}
        reason = body.get("revocation_reason", "unspecified")
        if reason not in REVOCATION_REASONS:
            return errors(400, "invalid_revocation_reason", f"Unknown revocation reason {reason}.")
        if o.status == "revoked":
            return errors(400, "already_revoked", "The certificate is already revoked.")
        if o.status != "issued":
            return errors(400, "invalid_status", f"An order in status {o.status} cannot be revoked.")
        if not body.get("skip_approval"):
            return Reply(201, {"id": o.id + 90000, "type": "revoke", "status": "pending"})
        o.status, o.revocation_reason = "revoked", reason
        return Reply(204)

    def _download(self, call: Call, g: dict[str, str]) -> Reply:
        order = next((o for o in self.orders.values() if o.certificate_id == int(g["cid"])), None)
        if order is None or order.certificate is None:
            return errors(404, "not_found", "Certificate not found.")
        leaf, pem = order.certificate, serialization.Encoding.PEM
        fmt = g["fmt"]
        if fmt == "pem_all":  # documented as root + intermediate + leaf
            data = self.ca.root_pem + self.ca.issuing_pem + leaf.public_bytes(pem)
        elif fmt == "pem_noroot":
            data = leaf.public_bytes(pem) + self.ca.issuing_pem
        elif fmt == "pem_nointermediate":
            data = leaf.public_bytes(pem)
        elif fmt == "p7b":
            der = pkcs7.serialize_certificates([leaf, self.ca.issuing, self.ca.root], serialization.Encoding.DER)
            return Reply(200, der, content_type="application/x-pkcs7-certificates")
        else:
            return errors(400, "invalid_format", f"Unknown format {fmt}.")
        return Reply(200, data, content_type="application/x-pem-file")

    def _organization(self, call: Call, g: dict[str, str]) -> Reply:
        if int(g["id"]) not in self.organizations:
            return errors(404, "not_found", "Organization not found.")
        return Reply(200, {"id": int(g["id"]), "name": "Example Corp", "status": "active"})

    def _products(self, call: Call, g: dict[str, str]) -> Reply:
        return Reply(
            200,
            {
                "products": [
                    {"name_id": p, "name": p.replace("_", " ").title(), "type": "secure_email"}
                    for p in sorted(self.enabled_products)
                ]
            },
        )
