"""A loopback fake of Sectigo Certificate Manager's S/MIME REST API (header login).

Paths live under ``/api`` like the real base URL (https://cert-manager.com/api). It
checks the ``login``/``password``/``customerUri`` headers, answers errors as
``{"code": int, "description": str}``, reports pending collects with code -183 and
revoked ones with -192, serves the documented collect formats, and issues real
certificates from the test CA. Enrollments stay ``requested`` until collected
``pending_polls`` times (or until ``approve``); ``reject`` models an SCM admin
turning the request down.

UNCONFIRMED in the reference, so chosen here: every error code other than -183 and
-192, the HTTP statuses that carry them, the shape of ``GET /smime/v2/{id}`` (and
whether it shows ``customFields``: ``show_custom_fields``), whether SCM refuses an
unknown custom-field name (``custom_fields``), that revoking a pending order
withdraws it, and rate limiting (none documented; ``limiter`` is off by default).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.fakes.digicert import SlidingWindowLimiter, VendorFake
from tests.fakes.server import Call, Handler, Reply
from tests.support.testca import TestCA

BASE = "/api"
MARKER_FIELD = "CertPortal order key"


def error(status: int, code: int, description: str) -> Reply:
    return Reply(status, {"code": code, "description": description})


@dataclass
class Enrollment:
    id: int
    body: dict[str, Any]
    csr_pem: bytes
    state: str = "requested"
    collects: int = 0
    certificate: x509.Certificate | None = None
    revocation_reason: str = ""

    @property
    def marker(self) -> str:
        return next(
            (str(f.get("value")) for f in self.body.get("customFields") or [] if f.get("name") == MARKER_FIELD), ""
        )


class FakeSectigo(VendorFake):
    def __init__(
        self,
        ca: TestCA,
        *,
        login: str = "api-admin",
        password: str = "scm-test-password",
        customer_uri: str = "example",
        org_id: int = 4321,
    ) -> None:
        super().__init__()
        self.ca = ca
        self.login, self.password, self.customer_uri = login, password, customer_uri
        self.orgs = {org_id}
        self.types = [
            {
                "id": 5678,
                "name": "Mailbox-validated S/MIME (Strict)",
                "description": "MV strict",
                "terms": [365, 730],
                "keyTypes": {"RSA": ["2048", "3072", "4096"], "EC": ["P-256", "P-384"]},
                "useSecondaryOrgName": False,
            },
            {
                "id": 5679,
                "name": "Sponsor-validated S/MIME (Multipurpose)",
                "description": "SV multipurpose",
                "terms": [365],
                "keyTypes": {"RSA": ["2048", "3072"]},
                "useSecondaryOrgName": False,
            },
        ]
        self.custom_fields = {MARKER_FIELD}
        self.show_custom_fields = True
        self.pending_polls = 1
        self.enrollments: dict[int, Enrollment] = {}
        self.limiter: SlidingWindowLimiter | None = None
        self._ids = itertools.count(880000)
        r = self._route_api
        r("GET", r"/smime/v1/types", self._list_types)
        r("POST", r"/smime/v1/enroll", self._enroll)
        r("GET", r"/smime/v1/collect/(?P<id>\d+)", self._collect)
        r("GET", r"/smime/v2", self._list)
        r("GET", r"/smime/v2/(?P<id>\d+)", self._details)
        r("POST", r"/smime/v1/revoke/order/(?P<id>\d+)", self._revoke)

    # -- test controls ----------------------------------------------------------

    def approve(self, order_id: int | str) -> None:
        with self.lock:
            self._issue(self.enrollments[int(order_id)])

    def reject(self, order_id: int | str) -> None:
        with self.lock:
            self.enrollments[int(order_id)].state = "rejected"

    def orders_per_marker(self) -> Counter[str]:
        with self.lock:
            return Counter(e.marker for e in self.enrollments.values())

    # -- plumbing ---------------------------------------------------------------

    def _route_api(self, method: str, pattern: str, handler: Handler) -> None:
        def guarded(call: Call, groups: dict[str, str]) -> Reply:
            h = call.headers
            if (h.get("login"), h.get("password"), h.get("customeruri")) != (
                self.login,
                self.password,
                self.customer_uri,
            ):
                return error(401, -16, "Unknown user or wrong password for this customer URI")
            if self.limiter is not None and not self.limiter.allow(self.login):
                return error(429, -1000, "Too many requests")
            return handler(call, groups)

        self.route(method, BASE + pattern, guarded)

    def _issue(self, e: Enrollment) -> None:
        if e.certificate is None:
            e.certificate = self.ca.issue(e.csr_pem, e.body["email"], days=int(e.body["term"]))
        e.state = "issued"

    def _type(self, type_id: object) -> dict[str, Any] | None:
        return next((t for t in self.types if t["id"] == type_id), None)

    # -- endpoints ----------------------------------------------------------------

    def _list_types(self, call: Call, g: dict[str, str]) -> Reply:
        org = call.query.get("organizationId", [None])[0]
        if org is not None and int(org) not in self.orgs:
            return error(400, -14, f"Organization {org} does not exist or is not enabled for client certificates")
        return Reply(200, self.types)

    def _enroll(self, call: Call, g: dict[str, str]) -> Reply:
        try:
            body = call.json()
            csr_pem = body["csr"].encode()
            x509.load_pem_x509_csr(csr_pem)
        except (ValueError, KeyError, TypeError, AttributeError):
            return error(400, -7, "The CSR is missing or malformed")
        if body.get("orgId") not in self.orgs:
            return error(400, -14, f"Organization {body.get('orgId')} does not exist")
        cert_type = self._type(body.get("certType"))
        if cert_type is None:
            return error(400, -7, f"Certificate type {body.get('certType')} is not available")
        if body.get("term") not in cert_type["terms"]:
            return error(400, -7, f"Term {body.get('term')} is not allowed for this certificate type")
        for name in ("email", "firstName", "lastName"):
            if not body.get(name):
                return error(400, -7, f"Field {name} is required")
        if body["email"] in self.refuse_mailboxes:
            return error(400, -7, f"Email {body['email']} is not allowed for organization {body['orgId']}")
        for custom in body.get("customFields") or []:
            if custom.get("name") not in self.custom_fields:
                return error(400, -7, f"Custom field '{custom.get('name')}' is not defined")
        e = Enrollment(id=next(self._ids), body=body, csr_pem=csr_pem)
        self.enrollments[e.id] = e
        return Reply(200, {"orderNumber": e.id, "backendCertId": str(e.id)})

    def _collect(self, call: Call, g: dict[str, str]) -> Reply:
        e = self.enrollments.get(int(g["id"]))
        if e is None:
            return error(404, -1, f"Certificate {g['id']} does not exist")
        if e.state == "requested":
            e.collects += 1
            if e.collects > self.pending_polls:
                self._issue(e)
            else:
                return error(400, -183, "Certificate is not collectable yet, please try again later")
        if e.state == "revoked":
            return error(400, -192, "Certificate has been revoked")
        if e.state == "rejected":
            return error(400, -1, "The certificate request was rejected by an administrator")
        assert e.certificate is not None
        pem = serialization.Encoding.PEM
        leaf, issuing, root = e.certificate.public_bytes(pem), self.ca.issuing_pem, self.ca.root_pem
        formats: dict[str, tuple[bytes, str]] = {
            "x509": (leaf + issuing + root, "application/x-pem-file"),
            "pem": (leaf + issuing + root, "application/x-pem-file"),
            "x509CO": (leaf, "application/x-pem-file"),
            "pemco": (leaf, "application/x-pem-file"),
            "pemia": (leaf + issuing, "application/x-pem-file"),
            "x509IO": (root + issuing, "application/x-pem-file"),
            "x509IOR": (issuing + root, "application/x-pem-file"),
            "base64": (
                pkcs7.serialize_certificates([e.certificate, self.ca.issuing, self.ca.root], pem),
                "application/pkcs7-mime",
            ),
            "bin": (
                pkcs7.serialize_certificates(
                    [e.certificate, self.ca.issuing, self.ca.root], serialization.Encoding.DER
                ),
                "application/pkcs7-mime",
            ),
        }
        fmt = call.query.get("format", ["base64"])[0]
        if fmt not in formats:
            return error(400, -7, f"Format {fmt} is not available for this certificate")
        data, content_type = formats[fmt]
        return Reply(200, data, content_type=content_type)

    def _item(self, e: Enrollment) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": e.id,
            "orderNumber": e.id,
            "state": e.state,
            "certificateDetails": {"subject": f"CN={e.body['email']}"},
        }
        if e.certificate is not None:
            item["serialNumber"] = format(e.certificate.serial_number, "X")
            item["expires"] = e.certificate.not_valid_after_utc.date().isoformat()
        return item

    def _list(self, call: Call, g: dict[str, str]) -> Reply:
        q = {k: v[0] for k, v in call.query.items()}
        items = sorted(self.enrollments.values(), key=lambda e: e.id)
        if "certTypeId" in q:
            items = [e for e in items if str(e.body.get("certType")) == q["certTypeId"]]
        if "state" in q:
            items = [e for e in items if e.state == q["state"]]
        if "email" in q:
            items = [e for e in items if e.body.get("email") == q["email"]]
        position, size = int(q.get("position", 0)), int(q.get("size", 10))
        return Reply(200, [self._item(e) for e in items[position : position + size]])

    def _details(self, call: Call, g: dict[str, str]) -> Reply:
        e = self.enrollments.get(int(g["id"]))
        if e is None:
            return error(404, -1, f"Certificate {g['id']} does not exist")
        details = {
            **self._item(e),
            "backendCertId": str(e.id),
            "email": e.body["email"],
            "firstName": e.body.get("firstName"),
            "lastName": e.body.get("lastName"),
            "certTypeId": e.body.get("certType"),
            "term": e.body.get("term"),
        }
        if self.show_custom_fields:
            details["customFields"] = e.body.get("customFields") or []
        return Reply(200, details)

    def _revoke(self, call: Call, g: dict[str, str]) -> Reply:
        e = self.enrollments.get(int(g["id"]))
        if e is None:
            return error(404, -1, f"Certificate {g['id']} does not exist")
        reason = str((call.json() or {}).get("reason", ""))
        if not reason.strip() or len(reason) > 511:
            return error(400, -7, "Reason must be between 1 and 511 characters")
        if e.state in ("revoked", "rejected"):
            return error(400, -1, f"Certificate is {e.state}")
        e.state, e.revocation_reason = "revoked", reason
        return Reply(204)
