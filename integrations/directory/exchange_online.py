"""Publishes S/MIME certificates to cloud mailboxes with Exchange Online's ``Set-Mailbox -UserCertificate``.

Exchange Online has no documented REST API for this. The calls go to the admin API
that the ExchangeOnlineManagement v3 module itself uses, ``POST
{base_url}/adminapi/beta/{tenant}/InvokeCommand`` with ``{"CmdletInput":
{"CmdletName", "Parameters"}}``. Undocumented and UNCONFIRMED against Microsoft
documentation: that endpoint, byte[] values as base64 strings, multi-valued
changes as ``{"@odata.type": "#Exchange.GenericHashTable", "Add": [...], "Remove":
[...]}`` (as in public tooling), the ``X-AnchorMailbox: UPN:<mailbox>`` routing
header, and a missing mailbox answering 404 with
``ManagementObjectNotFoundException`` in the error message.

The rules are those of the LDAP publisher (``certvalues``): add, delete exact
values the pipeline listed, never replace, refuse beyond 15 values.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from typing import Any

import httpx

from integrations.directory.certvalues import PublishPlan, plan_publish, warn_about_kept_smime
from integrations.directory.entra_token import MsalTokenSource, TokenSource
from integrations.http import RetryPolicy, VendorClient
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.ports import Clock
from pipeline.settings import ExchangeOnlineSettings, Settings

log = logging.getLogger(__name__)

_USER_REASON = "Exchange Online refused to publish the certificate. IT has been told."
_HASHTABLE = "#Exchange.GenericHashTable"
_NOT_FOUND_MARKERS = ("ManagementObjectNotFoundException", "couldn't be found")


class ExchangeOnlineDirectory:
    """``DirectoryPublisher`` for Exchange Online mailboxes. The constructor does no I/O."""

    name = "exchange_online"

    def __init__(
        self,
        settings: ExchangeOnlineSettings,
        *,
        tokens: TokenSource,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not settings.tenant_id:
            raise ConfigError("directory.exchange_online.tenant_id is required")
        if settings.base_url.startswith("http://"):
            log.warning("directory.exchange_online.base_url %s is plain http://; tests only", settings.base_url)
        self._s = settings
        self._tokens = tokens
        self._http = VendorClient(
            vendor="Exchange Online",
            base_url=f"{settings.base_url.rstrip('/')}/adminapi/beta/{settings.tenant_id}",
            timeout=settings.timeout_seconds,
            policy=policy,
            describe_error=_describe,
            transport=transport,
        )

    # -- the port ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        try:
            self._tokens.token()
            self._invoke("Get-Mailbox", {"ResultSize": 1}, anchor="")
        except (RetryLater, PermanentFailure) as exc:
            return [exc.admin_detail]
        except NotFound:
            return []
        return []

    def publish(self, *, mailbox: str, certificate_der: bytes, removable_sha256: frozenset[str]) -> None:
        self._apply(mailbox, certificate_der, removable_sha256)

    def unpublish(self, *, mailbox: str, removable_sha256: frozenset[str]) -> None:
        self._apply(mailbox, None, removable_sha256)

    def certificates(self, *, mailbox: str) -> tuple[list[bytes], list[bytes]]:
        """The mailbox's (UserCertificate, UserSMimeCertificate) values. Raises like publish."""
        return self._read(mailbox)

    def close(self) -> None:
        self._http.close()

    # -- the work ---------------------------------------------------------------------------

    def _apply(self, mailbox: str, new_der: bytes | None, removable: frozenset[str]) -> None:
        certificates, smime = self._read(mailbox)
        plan = plan_publish(
            mailbox=mailbox,
            certificate_values=certificates,
            smime_values=smime,
            new_der=new_der,
            removable_sha256=removable,
        )
        warn_about_kept_smime(
            plan,
            mailbox=mailbox,
            publishing=new_der is not None,
            smime="UserSMimeCertificate",
            certificate="UserCertificate",
        )
        if plan.changes_anything:
            self._invoke("Set-Mailbox", {"Identity": mailbox, **_changes(plan)}, anchor=mailbox)
            log.info(
                "published to %s in Exchange Online: added %d, removed %d + %d value(s)",
                mailbox,
                1 if plan.add is not None else 0,
                len(plan.remove_certificates),
                len(plan.remove_smime),
            )

    def _read(self, mailbox: str) -> tuple[list[bytes], list[bytes]]:
        body = self._invoke("Get-Mailbox", {"Identity": mailbox}, anchor=mailbox)
        rows = body.get("value") or []
        if not rows:
            raise NotFound(f"Exchange Online has no mailbox {mailbox}")
        row = rows[0]
        return _decode(row.get("UserCertificate"), mailbox), _decode(row.get("UserSMimeCertificate"), mailbox)

    def _invoke(self, cmdlet: str, parameters: dict[str, Any], *, anchor: str) -> dict[str, Any]:
        """Run one cmdlet; a refused token is replaced once. Raises NotFound, RetryLater, PermanentFailure."""
        payload = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}
        token = self._tokens.token()
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {token}",
                "X-CmdletName": cmdlet,
                "client-request-id": str(uuid.uuid4()),
            }
            if anchor:
                headers["X-AnchorMailbox"] = f"UPN:{anchor}"
            # Get-* and Set-Mailbox with Add/Remove are safe to repeat after a lost answer.
            reply = self._http.request(
                "POST", "InvokeCommand", json=payload, headers=headers, ok=(400, 401, 403, 404), idempotent=True
            )
            if reply.status_code == 401 and attempt == 1:
                token = self._tokens.token(refresh=True)
                continue
            if reply.is_success:
                return _json(reply)
            message = _describe(reply)
            if reply.status_code == 404 or any(m in message for m in _NOT_FOUND_MARKERS):
                raise NotFound(f"Exchange Online has no mailbox {anchor or '(any)'}: {message}")
            if "write scope" in message:
                raise PermanentFailure(
                    f"The mailbox {anchor} is synchronised from on-premises Active Directory; "
                    "its certificates must be published there (directory backend ldap).",
                    admin_detail=f"Exchange Online {cmdlet} {anchor}: {message}",
                )
            raise PermanentFailure(
                _USER_REASON, admin_detail=f"Exchange Online {cmdlet} answered {reply.status_code}: {message}"
            )
        raise PermanentFailure(_USER_REASON, admin_detail=f"Exchange Online refused a fresh token for {cmdlet}")


def _changes(plan: PublishPlan) -> dict[str, Any]:
    def b64(values: tuple[bytes, ...]) -> list[str]:
        return [base64.b64encode(v).decode("ascii") for v in values]

    changes: dict[str, Any] = {}
    certificate: dict[str, Any] = {"@odata.type": _HASHTABLE}
    if plan.add is not None:
        certificate["Add"] = b64((plan.add,))
    if plan.remove_certificates:
        certificate["Remove"] = b64(plan.remove_certificates)
    if len(certificate) > 1:
        changes["UserCertificate"] = certificate
    if plan.remove_smime:
        changes["UserSMimeCertificate"] = {"@odata.type": _HASHTABLE, "Remove": b64(plan.remove_smime)}
    return changes


def _decode(values: Any, mailbox: str) -> list[bytes]:
    if not values:
        return []
    if not isinstance(values, list):
        values = [values]
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, TypeError, ValueError):
        raise RetryLater(f"Exchange Online returned certificate values for {mailbox} that are not base64") from None


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        raise RetryLater(f"Exchange Online: malformed JSON ({reply.status_code})") from None
    return body if isinstance(body, dict) else {}


def _describe(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error") or {}
    except (ValueError, AttributeError):
        return reply.text[:200]
    if not isinstance(error, dict):
        return str(error)[:500]
    details = error.get("details") or []
    message = (details[0].get("message") if details and isinstance(details[0], dict) else None) or error.get("message")
    return str(message or f"HTTP {reply.status_code}")[:500]


def from_settings(settings: Settings, *, clock: Clock) -> ExchangeOnlineDirectory:
    s = settings.directory.exchange_online
    tokens = MsalTokenSource(
        tenant_id=s.tenant_id,
        client_id=s.client_id,
        certificate_path=s.certificate_path,
        authority_url=s.authority_url,
        scope=f"{s.base_url.rstrip('/')}/.default",
        timeout=s.timeout_seconds,
    )
    return ExchangeOnlineDirectory(s, tokens=tokens)
