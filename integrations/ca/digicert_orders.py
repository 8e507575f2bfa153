"""DigiCert CertCentral Secure Email: order bodies, status mapping and error wording.

Pure functions, so the adapter in ``digicert.py`` stays about HTTP and the port.
"""

from __future__ import annotations

from typing import Any

import httpx

from integrations.ca.common import NAMES_USER_REASON, SETUP_USER_REASON, marker_for
from pipeline.errors import PermanentFailure
from pipeline.ports import Order, OrderStatus, RevocationReason, Subscriber
from pipeline.settings import DigiCertSettings

PRODUCTS = ("secure_email_mailbox", "secure_email_sponsor", "secure_email_organization")
PROFILE_TYPES = ("strict", "multipurpose")
# Only "signing" is verbatim on DigiCert's page; the other two come from a third-party client (UNCONFIRMED).
USAGES = ("signing", "key_management", "dual_use")

_PENDING = {"pending", "processing", "approved", "waiting_pickup", "needs_approval", "reissue_pending", "needs_csr"}
_FAILED = {"rejected", "denied", "revoked", "expired"}
_CANCELLED = {"canceled", "cancelled"}
# DigiCert documents "superseded" for order revocation; the other spellings follow the
# same snake_case pattern (UNCONFIRMED).
REVOCATION_REASONS = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "key_compromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliation_changed",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessation_of_operation",
}
REJECTED_USER_MESSAGE = "DigiCert turned down the certificate request. IT has been told and will follow up."


def settings_problems(s: DigiCertSettings) -> list[str]:
    """Plain-language problems with ``[ca.digicert]`` that make every order fail."""
    problems = []
    if s.product not in PRODUCTS:
        problems.append(f"[ca.digicert] product must be one of {', '.join(PRODUCTS)} (got {s.product!r}).")
    if s.profile_type not in PROFILE_TYPES:
        problems.append(f"[ca.digicert] profile_type must be strict or multipurpose (got {s.profile_type!r}).")
    if s.usage not in USAGES:
        problems.append(f"[ca.digicert] usage must be one of {', '.join(USAGES)} (got {s.usage!r}).")
    if s.validity_years not in (1, 2):
        problems.append(
            f"[ca.digicert] validity_years must be 1 or 2: S/MIME certificates may not exceed 825 days "
            f"(got {s.validity_years})."
        )
    if s.product != "secure_email_mailbox" and not s.organization_id:
        problems.append(f"[ca.digicert] organization_id is required for {s.product}.")
    return problems


def order_body(
    s: DigiCertSettings, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str, signature_hash: str
) -> dict[str, Any]:
    """The JSON for ``POST /order/certificate/{product}``.

    Raises PermanentFailure when the settings or the subscriber's names make the order impossible.
    """
    problems = settings_problems(s)
    if problems:
        raise PermanentFailure(SETUP_USER_REASON, admin_detail=" ".join(problems))
    certificate: dict[str, Any] = {
        "emails": [subscriber.mailbox],
        "csr": csr_pem.decode("ascii"),
        "signature_hash": signature_hash,
        # Sent explicitly: DigiCert's page contradicts itself on the default.
        "profile_type": s.profile_type,
        # A mailbox CN is allowed for every Secure Email type and is the only one for Mailbox-validated.
        "common_name_indicator": "email_address",
        "usage_designation": {"primary_usage": s.usage},
    }
    if s.product == "secure_email_sponsor":
        if not (subscriber.first_name.strip() and subscriber.last_name.strip()):
            detail = f"DigiCert sponsor order for {subscriber.mailbox} needs first and last name"
            raise PermanentFailure(NAMES_USER_REASON, admin_detail=detail)
        certificate["individual"] = {"first_name": subscriber.first_name, "last_name": subscriber.last_name}
    body: dict[str, Any] = {
        "certificate": certificate,
        "validity_years": s.validity_years,
        "skip_approval": s.skip_approval,
        "payment_method": "balance",
        "comments": marker_for(idempotency_key),
    }
    if s.organization_id:
        body["organization"] = {"id": s.organization_id}
    return body


def markers_on(info: dict[str, Any]) -> set[str] | None:
    """Texts on an order-info answer that may carry our marker, or None if it has no such field.

    Where DigiCert echoes order ``comments`` is UNCONFIRMED: accept ``comments``,
    ``notes[].text`` and ``custom_fields[].value``. None means "cannot tell", so a
    lookup must not conclude the order does not exist.
    """
    found: set[str] = set()
    seen_field = False
    if isinstance(info.get("comments"), str):
        seen_field = True
        found.add(info["comments"].strip())
    for key, text_key in (("notes", "text"), ("custom_fields", "value")):
        items = info.get(key)
        if isinstance(items, list):
            seen_field = True
            found.update(str(i.get(text_key, "")).strip() for i in items if isinstance(i, dict))
    return found if seen_field else None


def order_from_info(info: dict[str, Any], *, awaiting_validation: bool = False) -> Order:
    """Map an order-info answer to the port's Order."""
    order_id = str(info.get("id", ""))
    status = str(info.get("status", "")).lower()
    if status == "issued":
        return Order(order_id, OrderStatus.ISSUED, detail="DigiCert order issued")
    if status in _CANCELLED:
        return Order(order_id, OrderStatus.CANCELLED, detail="DigiCert order canceled")
    if status in _FAILED:
        detail = f"DigiCert order {order_id} is {status}"
        return Order(order_id, OrderStatus.REJECTED, detail=detail, user_message=REJECTED_USER_MESSAGE)
    detail = f"DigiCert order {order_id} is {status or 'in an unknown state'}"
    if status not in _PENDING:
        detail += " (a status CertPortal does not know; treated as pending)"
    return Order(order_id, OrderStatus.PENDING, detail=detail, awaiting_validation=awaiting_validation)


def describe_error(response: httpx.Response) -> str:
    """DigiCert's own words from ``{"errors":[{"code","message"}]}`` (kept for admins)."""
    try:
        errors = response.json().get("errors")
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:500]
    except (ValueError, AttributeError, TypeError):
        pass
    return response.text[:200] or response.reason_phrase


def refusal(response: httpx.Response, what: str) -> PermanentFailure:
    """A 4xx answer as a PermanentFailure: a plain sentence for the employee, DigiCert's words for admins."""
    detail = f"DigiCert answered {response.status_code} to {what}: {describe_error(response)}"
    if response.status_code in (401, 403):
        return PermanentFailure(
            SETUP_USER_REASON, admin_detail=detail + " (check DIGICERT_API_KEY and that the key may place orders)"
        )
    return PermanentFailure(
        "DigiCert refused the certificate request. IT has been told and will follow up.", admin_detail=detail
    )
