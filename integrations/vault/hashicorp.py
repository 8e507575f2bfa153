"""Vault backend ``hashicorp``: one KV v2 secret per certificate holding ``pfx`` (base64) and ``password``.

Writes use check-and-set, so a resumed job never overwrites a different
certificate's secret at the same path: a path is ours to write only while it is
empty or its custom metadata names the same serial. Every write of the same
certificate is a new version (the engine keeps ``max_versions`` of them).

The reference ``store`` returns is ``hashicorp:<mount>:<path>``; ``retrieve``
reads the latest version there. Vault cannot store a reason with a read, so the
reason travels in the ``X-CertPortal-Reason`` request header, which Vault's audit
log records once the header is enabled in ``sys/config/auditing/request-headers``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from integrations.http import RetryPolicy, VendorClient
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.ports import Clock, VaultEntry, VaultSecret
from pipeline.settings import HashiCorpSettings, Settings

log = logging.getLogger(__name__)

_USER_REASON = "The key vault refused to store the certificate. IT has been told."
_CAS_MISMATCH = "check-and-set parameter did not match"
_ATTEMPTS = 3


@dataclass(frozen=True)
class _Current:
    version: int
    data: dict[str, Any] | None  # None when the latest version is deleted or destroyed
    custom_metadata: dict[str, str]


class HashiCorpVault:
    """``Vault`` on HashiCorp Vault KV v2 with token or AppRole auth. The constructor does no I/O."""

    name = "hashicorp"

    def __init__(
        self,
        settings: HashiCorpSettings,
        *,
        token: str = "",
        role_id: str = "",
        secret_id: str = "",
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._s = settings
        if not settings.url.startswith(("https://", "http://")):
            raise ConfigError("vault.hashicorp.url must be an https:// URL")
        if settings.url.startswith("http://"):
            log.warning("vault.hashicorp.url %s is plain http://; use only in labs and tests", settings.url)
        try:
            settings.path_template.format(mailbox="m", serial="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "vault.hashicorp.path_template may only use {mailbox} and {serial} (e.g. certportal/{mailbox}/{serial})"
            ) from exc
        self._mount = settings.mount.strip("/")
        self._static_token = token
        self._role_id, self._secret_id = role_id, secret_id
        self._token = token if settings.auth == "token" else ""
        self._lock = threading.Lock()
        headers = {"X-Vault-Namespace": settings.namespace} if settings.namespace else {}
        self._http = VendorClient(
            vendor="HashiCorp Vault",
            base_url=settings.url.rstrip("/") + "/v1",
            timeout=settings.timeout_seconds,
            headers=headers,
            verify=settings.ca_file or True,
            policy=policy,
            describe_error=_describe,
            transport=transport,
        )

    # -- the port ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        problems: list[str] = []
        try:
            if self._s.auth == "token":
                if not self._static_token:
                    return ["VAULT_TOKEN is not set"]
                if self._call("GET", "auth/token/lookup-self", ok=(403,)).status_code == 403:
                    return ["HashiCorp Vault refused VAULT_TOKEN (invalid or expired)"]
            else:
                self._login()
            reply = self._call("GET", f"sys/internal/ui/mounts/{self._mount}", ok=(400, 403, 404))
            if not reply.is_success:
                problems.append(f"KV mount {self._mount!r} does not exist or the token's policy grants nothing on it")
            else:
                info = _json(reply).get("data") or {}
                if info.get("type") != "kv" or str((info.get("options") or {}).get("version")) != "2":
                    problems.append(f"mount {self._mount!r} is not a KV version 2 secrets engine")
        except (RetryLater, PermanentFailure) as exc:
            problems.append(getattr(exc, "admin_detail", str(exc)))
        return problems

    def store(self, *, entry: VaultEntry) -> str:
        path = self._path(entry)
        wanted = {"pfx": base64.b64encode(entry.pfx).decode("ascii"), "password": entry.password}
        metadata = {
            "serial": entry.serial,
            "mailbox": entry.mailbox,
            "not_before": entry.not_before.isoformat(),
            "not_after": entry.not_after.isoformat(),
            "written_by": "certportal",
        }
        for _ in range(_ATTEMPTS):
            current = self._read(path)
            if current is None:
                # Metadata first: a fresh path then names its serial from the first version on.
                self._write_metadata(path, metadata)
                cas = 0
            elif current.custom_metadata.get("serial") != entry.serial:
                raise PermanentFailure(
                    _USER_REASON,
                    admin_detail=f"HashiCorp Vault: {self._mount}/{path} already holds a secret for another "
                    f"certificate (serial {current.custom_metadata.get('serial', 'unknown')}); not overwritten",
                )
            else:
                if {k: current.custom_metadata.get(k) for k in metadata} != metadata:
                    self._write_metadata(path, metadata)
                if current.data == wanted:
                    return self._ref(path)
                cas = current.version
            if self._write(path, wanted, cas):
                return self._ref(path)
        raise RetryLater(f"HashiCorp Vault: {self._mount}/{path} kept changing while storing")

    def retrieve(self, *, ref: str, reason: str) -> VaultSecret:
        prefix, _, rest = ref.partition(":")
        mount, _, path = rest.partition(":")
        if prefix != self.name or not mount or not path:
            raise NotFound(f"{ref!r} is not a HashiCorp Vault reference")
        reply = self._call(
            "GET", f"{quote(mount)}/data/{path}", ok=(404,), headers={"X-CertPortal-Reason": _header_safe(reason)}
        )
        data = (_json(reply).get("data") or {}).get("data") if reply.is_success else None
        if not data:
            raise NotFound(f"HashiCorp Vault holds no current secret at {mount}/{path}")
        try:
            return VaultSecret(pfx=base64.b64decode(data["pfx"], validate=True), password=str(data["password"]))
        except (KeyError, TypeError, binascii.Error):
            raise PermanentFailure(
                "The stored certificate could not be read back.",
                admin_detail=f"HashiCorp Vault: {mount}/{path} lacks a base64 'pfx' or a 'password' field",
            ) from None

    def close(self) -> None:
        self._http.close()

    # -- KV v2 calls ------------------------------------------------------------------------

    def _path(self, entry: VaultEntry) -> str:
        raw = self._s.path_template.format(mailbox=entry.mailbox, serial=entry.serial)
        segments = [s for s in raw.strip("/").split("/") if s]
        if not segments or any(s in (".", "..") for s in segments):
            raise ConfigError(f"vault.hashicorp.path_template gives an unusable path: {raw!r}")
        return "/".join(quote(s, safe="@.-_~+") for s in segments)

    def _ref(self, path: str) -> str:
        return f"{self.name}:{self._mount}:{path}"

    def _read(self, path: str) -> _Current | None:
        reply = self._call("GET", f"{self._mount}/data/{path}", ok=(404,))
        body = _json(reply) if reply.content else {}
        envelope = body.get("data") or {}
        meta = envelope.get("metadata") or {}
        if not meta.get("version"):
            return None
        deleted = bool(meta.get("deletion_time")) or bool(meta.get("destroyed"))
        data = envelope.get("data") if reply.is_success and not deleted else None
        return _Current(int(meta["version"]), data, dict(meta.get("custom_metadata") or {}))

    def _write(self, path: str, data: dict[str, str], cas: int) -> bool:
        """Write one version with check-and-set; False when someone else wrote first."""
        # With CAS a repeated write cannot clobber anything, so a timeout may retry.
        reply = self._call(
            "POST",
            f"{self._mount}/data/{path}",
            json={"options": {"cas": cas}, "data": data},
            ok=(400,),
            idempotent=True,
        )
        if reply.status_code == 400:
            if _CAS_MISMATCH in _describe(reply):
                return False
            raise PermanentFailure(_USER_REASON, admin_detail=f"HashiCorp Vault refused the write: {_describe(reply)}")
        return True

    def _write_metadata(self, path: str, custom_metadata: dict[str, str]) -> None:
        self._call("POST", f"{self._mount}/metadata/{path}", json={"custom_metadata": custom_metadata}, idempotent=True)

    # -- auth ---------------------------------------------------------------------------------

    def _login(self) -> str:
        if self._s.auth == "token":
            return self._static_token
        if not (self._role_id and self._secret_id):
            raise PermanentFailure(_USER_REASON, admin_detail="VAULT_ROLE_ID and VAULT_SECRET_ID must be set")
        reply = self._http.request(
            "POST",
            f"auth/{self._s.approle_mount.strip('/')}/login",
            json={"role_id": self._role_id, "secret_id": self._secret_id},
            idempotent=True,
            ok=(400, 403),
        )
        token = ((_json(reply).get("auth") or {}).get("client_token")) if reply.is_success else None
        if not token:
            raise PermanentFailure(
                _USER_REASON, admin_detail=f"HashiCorp Vault refused the AppRole login: {_describe(reply)}"
            )
        with self._lock:
            self._token = str(token)
        return self._token

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One authenticated call; with AppRole a refused token is renewed by logging in again once."""
        token = self._token or self._login()
        extra = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            headers = {**extra, "X-Vault-Token": token}
            reply = self._http.request(method, path, ok=(*ok, 403), headers=headers, **kwargs)
            if reply.status_code != 403:
                return reply
            if self._s.auth == "approle" and attempt == 1:
                token = self._login()
                continue
            if 403 in ok:
                return reply
            raise PermanentFailure(
                _USER_REASON,
                admin_detail=f"HashiCorp Vault denied {method} {path}: {_describe(reply)} "
                "(token expired, or the policy lacks this path)",
            )
        raise AssertionError("unreachable")


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        raise RetryLater(f"HashiCorp Vault: malformed JSON ({reply.status_code})") from None
    return body if isinstance(body, dict) else {}


def _describe(reply: httpx.Response) -> str:
    try:
        errors = reply.json().get("errors")
    except (ValueError, AttributeError):
        return reply.text[:200]
    return "; ".join(str(e) for e in errors)[:500] if errors else f"HTTP {reply.status_code}"


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:200]


def from_settings(settings: Settings, *, clock: Clock) -> HashiCorpVault:
    s = settings.secrets
    return HashiCorpVault(
        settings.vault.hashicorp, token=s.vault_token, role_id=s.vault_role_id, secret_id=s.vault_secret_id
    )
