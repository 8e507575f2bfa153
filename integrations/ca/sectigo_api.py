"""Sectigo Certificate Manager S/MIME: enroll bodies, error codes, states and wording.

Pure functions, so the adapter in ``sectigo.py`` stays about HTTP and the port.
"""

from __future__ import annotations

from typing import Any

import httpx

from integrations.ca.common import NAMES_USER_REASON, SETUP_USER_REASON, marker_for
from pipeline.errors import PermanentFailure
from pipeline.ports import Order, OrderStatus, RevocationReason, Subscriber
from pipeline.settings import SectigoSettings

# collect answers these while the order is pending / after it was revoked (python-cert_manager).
PENDING_CODE = -183
REVOKED_CODE = -192
# The SCM custom field that carries our marker. An SCM admin creates it for S/MIME
# (docs/ca-backends.md); whether SCM refuses unknown custom fields is UNCONFIRMED.
MARKER_FIELD = "CertPortal order key"
MAX_TERM_DAYS = 825

_ISSUED = {"issued", "downloaded", "enrolled"}
_FAILED = {"rejected", "revoked", "pre_revoked", "expired"}
REJECTED_USER_MESSAGE = "Sectigo turned down the certificate request. IT has been told and will follow up."


def settings_problems(s: SectigoSettings) -> list[str]:
    problems = []
    if not s.customer_uri:
        problems.append("[ca.sectigo] customer_uri is not set (it is the name in your SCM login URL).")
    if not s.org_id:
        problems.append("[ca.sectigo] org_id is not set.")
    if not s.cert_type:
        problems.append("[ca.sectigo] cert_type is not set; `certportal doctor` lists the types your account offers.")
    if not 1 <= s.term <= MAX_TERM_DAYS:
        problems.append(f"[ca.sectigo] term must be between 1 and {MAX_TERM_DAYS} days (got {s.term}).")
    return problems


def enroll_body(s: SectigoSettings, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str) -> dict[str, Any]:
    """The JSON for ``POST /smime/v1/enroll``. Raises PermanentFailure when it cannot succeed."""
    problems = settings_problems(s)
    if problems:
        raise PermanentFailure(SETUP_USER_REASON, admin_detail=" ".join(problems))
    first, last = subscriber.first_name.strip(), subscriber.last_name.strip()
    if not (first and last):
        raise PermanentFailure(
            NAMES_USER_REASON, admin_detail=f"Sectigo enroll for {subscriber.mailbox} needs first and last name"
        )
    return {
        "orgId": s.org_id,
        "certType": s.cert_type,
        "term": s.term,
        "csr": csr_pem.decode("ascii").strip(),
        # ``email`` overrides the CSR's SANs; extra addresses would go in secondaryEmails.
        "email": subscriber.mailbox,
        "secondaryEmails": [],
        "firstName": first,
        "middleName": "",
        "lastName": last,
        # A mailbox CN suits every S/MIME type, and is the only CN a Mailbox-validated profile allows.
        "commonName": subscriber.mailbox,
        "phone": "",
        "eppn": "",
        "upn": "",
        "customFields": [{"name": MARKER_FIELD, "value": marker_for(idempotency_key)}],
    }


def error_of(response: httpx.Response) -> tuple[int | None, str]:
    """Sectigo's ``{"code": int, "description": str}``, as (code, words)."""
    try:
        body = response.json()
        return int(body["code"]), str(body.get("description", ""))[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, response.text[:200] or response.reason_phrase


def describe_error(response: httpx.Response) -> str:
    code, words = error_of(response)
    return f"{code}: {words}" if code is not None else words


def refusal(response: httpx.Response, what: str) -> PermanentFailure:
    detail = f"Sectigo answered {response.status_code} to {what}: {describe_error(response)}"
    if response.status_code in (401, 403):
        return PermanentFailure(
            SETUP_USER_REASON, admin_detail=detail + " (check SECTIGO_LOGIN, SECTIGO_PASSWORD and customer_uri)"
        )
    return PermanentFailure(
        "Sectigo refused the certificate request. IT has been told and will follow up.", admin_detail=detail
    )


def order_from_state(order_id: str, state: str) -> Order:
    state = state.lower()
    if state in _ISSUED:
        return Order(order_id, OrderStatus.ISSUED, detail=f"Sectigo certificate {order_id} is {state}")
    if state in _FAILED:
        return Order(
            order_id,
            OrderStatus.REJECTED,
            detail=f"Sectigo certificate {order_id} is {state}",
            user_message=REJECTED_USER_MESSAGE,
        )
    return Order(order_id, OrderStatus.PENDING, detail=f"Sectigo certificate {order_id} is {state or 'pending'}")


def marker_values(details: dict[str, Any]) -> set[str] | None:
    """Custom-field values on a certificate's details, or None when the answer has no such field."""
    fields = details.get("customFields")
    if not isinstance(fields, list):
        return None
    return {str(f.get("value", "")).strip() for f in fields if isinstance(f, dict)}


def revocation_text(reason: RevocationReason, serial: str) -> str:
    """Sectigo takes a free-text reason of 1-511 characters."""
    return f"{reason.value}: revoked through CertPortal (serial {serial or 'unknown'})"[:511]
