"""App-only access tokens from Microsoft Entra ID with MSAL and a certificate credential.

The app registration holds the public certificate; ``certificate_path`` names a PEM
file with that certificate and its private key. MSAL signs a client assertion with
the key (PS256, SHA-256 thumbprint) and caches the token until it nearly expires;
``token(refresh=True)`` drops the cache after the resource server refused a token.
MSAL's HTTP goes through an ``httpx.Client`` so it has the same timeouts as the rest.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import msal
import msal.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pipeline.errors import ConfigError, PermanentFailure, RetryLater

_USER_REASON = "Exchange Online refused to publish the certificate. IT has been told."
# Entra error codes that clear up by themselves.
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error"}
_KNOWN_AUTHORITY_HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn"}


class TokenSource(Protocol):
    def token(self, *, refresh: bool = False) -> str:
        """A bearer token for the Exchange Online admin API. Raises RetryLater, PermanentFailure."""
        ...


class MsalTokenSource:
    """Client-credentials tokens for ``scope``. Nothing happens until the first ``token()`` call."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        certificate_path: str,
        authority_url: str,
        scope: str,
        timeout: float,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not (tenant_id and client_id and certificate_path):
            raise ConfigError("directory.exchange_online needs tenant_id, client_id and certificate_path")
        self._tenant_id, self._client_id = tenant_id, client_id
        self._certificate_path = certificate_path
        self._authority = f"{authority_url.rstrip('/')}/{tenant_id}"
        self._scope = scope
        self._http = http_client or httpx.Client(timeout=timeout)
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            try:
                app = self._app or self._build()
                if refresh:
                    app.remove_tokens_for_client()
                result: dict[str, Any] = app.acquire_token_for_client(scopes=[self._scope]) or {}
            except (httpx.TransportError, httpx.HTTPStatusError, msal.exceptions.MsalServiceError) as exc:
                raise RetryLater(f"Entra ID token endpoint unreachable or failing: {exc}"[:300]) from None
            except ValueError as exc:  # MSAL's way of saying the authority (tenant) is unusable
                raise PermanentFailure(
                    _USER_REASON, admin_detail=f"Entra ID authority {self._authority}: {exc}"
                ) from None
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return token
        error = str(result.get("error", "no token"))
        detail = f"Entra ID refused app {self._client_id}: {error}: {str(result.get('error_description', ''))[:300]}"
        if error in _TRANSIENT_ERRORS:
            raise RetryLater(detail)
        raise PermanentFailure(_USER_REASON, admin_detail=detail)

    def _build(self) -> msal.ConfidentialClientApplication:
        key_pem, cert_pem = _load_credential(self._certificate_path)
        host = urlsplit(self._authority).hostname or ""
        self._app = msal.ConfidentialClientApplication(
            self._client_id,
            authority=self._authority,
            client_credential={"private_key": key_pem, "public_certificate": cert_pem},
            http_client=_HttpForMsal(self._http),
            # Discovery and validation only know Microsoft's own hosts.
            instance_discovery=None if host in _KNOWN_AUTHORITY_HOSTS else False,
        )
        return self._app


class _HttpForMsal:
    """The requests-like surface MSAL calls, on httpx.

    MSAL hands over the client assertion as bytes; httpx would encode a bytes form
    value as its repr ("b'...'"), so values are decoded to text first.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> httpx.Response:
        if isinstance(data, dict):
            form = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
            return self._client.post(url, params=params, data=form, headers=headers, **_timeout(kwargs))
        return self._client.post(url, params=params, content=data, headers=headers, **_timeout(kwargs))

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> httpx.Response:
        return self._client.get(url, params=params, headers=headers, **_timeout(kwargs))

    def close(self) -> None:
        self._client.close()


def _timeout(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"timeout": kwargs["timeout"]} if kwargs.get("timeout") is not None else {}


def _load_credential(path: str) -> tuple[str, str]:
    """(private key PEM, certificate PEM) from one PEM file. Raises PermanentFailure without echoing it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PermanentFailure(
            _USER_REASON, admin_detail=f"directory.exchange_online.certificate_path {path}: {exc.strerror}"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PermanentFailure(
            _USER_REASON,
            admin_detail=f"{path} must hold an unencrypted PEM private key and its PEM certificate",
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
