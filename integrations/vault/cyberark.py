"""Vault backend ``cyberark``: CyberArk PAM self-hosted (PVWA REST API, v10+ "Gen2" endpoints).

Each certificate becomes two accounts in the configured safe and platform:
``certportal-<serial>-pfx`` (the PFX, base64) and ``certportal-<serial>-pwd`` (its
password), with the serial, mailbox and validity dates as platform properties.
A store first searches the safe for those names, so a resumed job finds what an
earlier attempt created instead of adding duplicates; an existing account of the
same serial gets its value set again, so the vault always ends up with the bundle
the pipeline is about to verify.

The reference ``store`` returns is ``cyberark:<safe>:<pfx account id>:<password
account id>``. ``retrieve`` sends the reason with each retrieval, so CyberArk's own
activity log records why the secret was read.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from typing import Any
from urllib.parse import quote

import httpx

from integrations.http import RetryPolicy, VendorClient
from pipeline.errors import ConfigError, NotFound, OutcomeUnknown, PermanentFailure, RetryLater
from pipeline.ports import Clock, VaultEntry, VaultSecret
from pipeline.settings import CyberArkSettings, Settings

log = logging.getLogger(__name__)

_USER_REASON = "The key vault refused to store the certificate. IT has been told."
_AUTH_PATHS = {"cyberark": "CyberArk", "ldap": "LDAP", "radius": "radius", "windows": "Windows"}
_PARTS = ("pfx", "pwd")


class CyberArkVault:
    """``Vault`` on CyberArk PVWA. Cheap constructor; the session is opened on first use."""

    name = "cyberark"

    def __init__(
        self,
        settings: CyberArkSettings,
        *,
        username: str,
        password: str,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._s = settings
        if not settings.base_url.startswith(("https://", "http://")):
            raise ConfigError("vault.cyberark.base_url must be the PVWA https:// address")
        if settings.auth_method.lower() not in _AUTH_PATHS:
            raise ConfigError("vault.cyberark.auth_method must be CyberArk, LDAP, RADIUS or Windows")
        if settings.base_url.startswith("http://"):
            log.warning("vault.cyberark.base_url %s is plain http://; use only in labs and tests", settings.base_url)
        self._username, self._password = username, password
        self._token = ""
        self._lock = threading.Lock()
        root = re.sub(r"/PasswordVault/?$", "", settings.base_url.rstrip("/"), flags=re.IGNORECASE)
        self._http = VendorClient(
            vendor="CyberArk",
            base_url=root + "/PasswordVault/API",
            timeout=settings.timeout_seconds,
            verify=settings.ca_file or True,
            policy=policy,
            describe_error=_describe,
            transport=transport,
        )

    # -- the port ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        if not (self._username and self._password):
            return ["CYBERARK_USERNAME and CYBERARK_PASSWORD must be set"]
        try:
            self._logon()
            safe = quote(self._s.safe, safe="") + ("/" if "." in self._s.safe else "")
            reply = self._call("GET", f"Safes/{safe}", ok=(400, 403, 404))
            if not reply.is_success:
                return [f"CyberArk safe {self._s.safe!r} does not exist or {self._username} is not a member of it"]
        except (PermanentFailure, RetryLater) as exc:
            return [exc.admin_detail]
        return []

    def store(self, *, entry: VaultEntry) -> str:
        secrets = {"pfx": base64.b64encode(entry.pfx).decode("ascii"), "pwd": entry.password}
        if entry.password != entry.password.strip() or not entry.password:
            # CyberArk trims stored values, so such a password could never be read back exactly.
            raise PermanentFailure(_USER_REASON, admin_detail="CyberArk: the PFX password has surrounding whitespace")
        base = "certportal-" + re.sub(r"[^A-Za-z0-9]", "", entry.serial).lower()
        existing = self._find(base)
        ids: dict[str, str] = {}
        for part in _PARTS:
            name = f"{base}-{part}"
            account = existing.get(name)
            fresh = False
            if account is None:
                account = self._add(name, entry, part, secrets[part])
                fresh = account is not None
            if account is None:  # the add's outcome was unknown, or it had landed before
                account = self._find(base).get(name)
                if account is None:
                    raise OutcomeUnknown(f"CyberArk: adding {name} may or may not have taken effect")
            props = account.get("platformAccountProperties") or {}
            if props.get("CertSerial", entry.serial) != entry.serial or account.get("userName") != entry.mailbox:
                raise PermanentFailure(
                    _USER_REASON,
                    admin_detail=f"CyberArk: account {name} in {self._s.safe} belongs to another certificate",
                )
            if not fresh:
                self._call("POST", f"Accounts/{account['id']}/Password/Update", json={"NewCredentials": secrets[part]})
            ids[part] = str(account["id"])
        return f"{self.name}:{self._s.safe}:{ids['pfx']}:{ids['pwd']}"

    def retrieve(self, *, ref: str, reason: str) -> VaultSecret:
        parts = ref.split(":")
        if len(parts) != 4 or parts[0] != self.name:
            raise NotFound(f"{ref!r} is not a CyberArk reference")
        pfx_b64, password = (self._retrieve(account_id, reason) for account_id in parts[2:])
        try:
            return VaultSecret(pfx=base64.b64decode(pfx_b64, validate=True), password=password)
        except binascii.Error:
            raise PermanentFailure(
                "The stored certificate could not be read back.",
                admin_detail=f"CyberArk: account {parts[2]} does not hold a base64 PFX",
            ) from None

    def close(self) -> None:
        """Log off the session, if any, and release connections."""
        with self._lock:
            token, self._token = self._token, ""
        if token:
            try:
                self._http.request("POST", "Auth/Logoff", headers={"Authorization": token}, idempotent=True)
            except (PermanentFailure, RetryLater):  # the session will only time out
                log.info("CyberArk logoff failed; the session will expire on its own")
        self._http.close()

    # -- accounts -----------------------------------------------------------------------------

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        """Accounts in our safe whose name is exactly ``base-pfx`` or ``base-pwd``."""
        params = {"search": base, "filter": f"safeName eq {self._s.safe}", "limit": "100"}
        body = _json(self._call("GET", "Accounts", params=params))
        wanted = {f"{base}-{part}" for part in _PARTS}
        return {
            a["name"]: a
            for a in (body.get("value") or [])
            if isinstance(a, dict) and a.get("name") in wanted and a.get("safeName", self._s.safe) == self._s.safe
        }

    def _add(self, name: str, entry: VaultEntry, part: str, secret: str) -> dict[str, Any] | None:
        account = {
            "name": name,
            "safeName": self._s.safe,
            "platformId": self._s.platform_id,
            "address": entry.mailbox.rpartition("@")[2] or "certportal",
            "userName": entry.mailbox,
            "secretType": "password",
            "secret": secret,
            "platformAccountProperties": {
                "CertSerial": entry.serial,
                "Mailbox": entry.mailbox,
                "CertCreated": entry.not_before.isoformat(),
                "CertExpires": entry.not_after.isoformat(),
                "CertPart": "pfx" if part == "pfx" else "password",
            },
            "secretManagement": {
                "automaticManagementEnabled": False,
                "manualManagementReason": "S/MIME key escrow by CertPortal",
            },
        }
        try:
            reply = self._call("POST", "Accounts", json=account, ok=(409,))
        except OutcomeUnknown:
            return None
        if reply.status_code == 409:
            return None  # created meanwhile by an earlier attempt; the caller looks it up
        return _json(reply)

    def _retrieve(self, account_id: str, reason: str) -> str:
        body = {"reason": reason.strip() or "CertPortal", "ActionType": "show"}
        reply = self._call("POST", f"Accounts/{account_id}/Password/Retrieve", json=body, ok=(404,), idempotent=True)
        if reply.status_code == 404:
            raise NotFound(f"CyberArk holds no account {account_id} in {self._s.safe}")
        try:
            value = reply.json()  # a JSON string literal
        except ValueError:
            value = reply.text
        if not isinstance(value, str):
            raise PermanentFailure(
                "The stored certificate could not be read back.",
                admin_detail=f"CyberArk: unexpected retrieve response shape for account {account_id}",
            )
        return value

    # -- session ------------------------------------------------------------------------------

    def _logon(self) -> str:
        method = _AUTH_PATHS[self._s.auth_method.lower()]
        body = {"username": self._username, "password": self._password, "concurrentSession": True}
        reply = self._http.request("POST", f"Auth/{method}/Logon", json=body, idempotent=True)
        try:
            token = reply.json()
        except ValueError:
            token = None
        if isinstance(token, dict):  # Gen1-style {"CyberArkLogonResult": "..."}
            token = token.get("CyberArkLogonResult")
        if not isinstance(token, str) or not token:
            raise PermanentFailure(_USER_REASON, admin_detail="CyberArk: the logon answer held no session token")
        with self._lock:
            self._token = token
        return token

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One call with the session token; an expired session is replaced by one new logon."""
        token = self._token or self._logon()
        for attempt in (1, 2):
            reply = self._http.request(method, path, ok=(*ok, 401), headers={"Authorization": token}, **kwargs)
            if reply.status_code != 401:
                return reply
            if attempt == 1:
                token = self._logon()
        raise PermanentFailure(
            _USER_REASON, admin_detail=f"CyberArk refused a fresh session for {method} {path}: {_describe(reply)}"
        )


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RetryLater(f"CyberArk: malformed answer ({reply.status_code})")
    return body


def _describe(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200]
    if isinstance(body, dict) and ("ErrorCode" in body or "ErrorMessage" in body):
        return f"{body.get('ErrorCode', '')} {body.get('ErrorMessage', '')}".strip()[:500]
    return f"HTTP {reply.status_code}"


def from_settings(settings: Settings, *, clock: Clock) -> CyberArkVault:
    return CyberArkVault(
        settings.vault.cyberark,
        username=settings.secrets.cyberark_username,
        password=settings.secrets.cyberark_password,
    )
