"""A fake Microsoft Entra token endpoint and Exchange Online admin API (``InvokeCommand``).

Entra side: OpenID discovery and the v2.0 token endpoint for the client-credentials
grant with a certificate assertion, which the fake verifies (signature against the
registered certificate, thumbprint, audience, issuer, expiry) and answers with
``{"error", "error_description"}`` bodies on failure as Entra does. Exchange side:
``Get-Mailbox`` and ``Set-Mailbox`` with ``UserCertificate`` / ``UserSMimeCertificate``
as base64 strings and ``#Exchange.GenericHashTable`` Add/Remove changes; errors as
``{"error": {"code", "message", "details"}}``. Those Exchange shapes are not
documented by Microsoft; they follow public tooling that uses the same endpoint.
MSAL insists on an https authority, so ``msal_transport`` routes
``https://login.test`` to this fake.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.fakes.server import Call, FakeServer, Reply

AUTHORITY_HOST = "login.test"
HASHTABLE = "#Exchange.GenericHashTable"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeMailbox:
    certificates: list[bytes] = field(default_factory=list)
    smime: list[bytes] = field(default_factory=list)
    synced_from_ad: bool = False


class FakeExchangeOnline(FakeServer):
    def __init__(self, *, tenant_id: str, client_id: str, certificate: x509.Certificate) -> None:
        super().__init__()
        self.tenant_id, self.client_id, self.certificate = tenant_id, client_id, certificate
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.route("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", self._discovery)
        self.route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", self._token)
        self.route("POST", r"/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand", self._invoke)

    def reset(self) -> None:
        with self.lock:
            self.mailboxes.clear()
            self.tokens.clear()
            self.calls.clear()
            self._faults.clear()
            self.token_requests = 0

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def msal_transport(self) -> httpx.BaseTransport:
        """Sends MSAL's https://login.test requests to this fake over plain loopback HTTP."""
        return _Redirect(self.url)

    # -- Entra ------------------------------------------------------------------------------

    def _discovery(self, call: Call, groups: dict[str, str]) -> Reply:
        if groups["tenant"] != self.tenant_id:
            return Reply(400, {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."})
        base = f"https://{AUTHORITY_HOST}/{self.tenant_id}"
        return Reply(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
            },
        )

    def _token(self, call: Call, groups: dict[str, str]) -> Reply:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(call.body.decode()).items()}
        problem = self._assertion_problem(form, f"https://{AUTHORITY_HOST}/{groups['tenant']}/oauth2/v2.0/token")
        if groups["tenant"] != self.tenant_id:
            problem = "AADSTS90002: Tenant not found."
        if problem:
            return Reply(401, {"error": "invalid_client", "error_description": problem, "error_codes": [700027]})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})

    def _assertion_problem(self, form: dict[str, str], audience: str) -> str | None:
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != self.client_id:
            return "AADSTS700016: Application not found in the directory."
        if not form.get("scope", "").endswith("/.default"):
            return "AADSTS1002012: The provided value for scope is not valid."
        try:
            head_b64, body_b64, sig_b64 = form["client_assertion"].split(".")
            header, claims = json.loads(_unb64url(head_b64)), json.loads(_unb64url(body_b64))
        except (KeyError, ValueError):
            return "AADSTS50027: Invalid JWT token."
        der = self.certificate.public_bytes(Encoding.DER)
        # MSAL keeps the base64 padding on the thumbprints; compare without it.
        sha256_ok = str(header.get("x5t#S256", "")).rstrip("=") == _b64url(_digest(der, hashes.SHA256()))
        if not sha256_ok and str(header.get("x5t", "")).rstrip("=") != _b64url(_digest(der, hashes.SHA1())):  # noqa: S303 - legacy x5t
            return "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered."
        key = self.certificate.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            if header.get("alg") == "PS256"
            else padding.PKCS1v15()
        )
        try:
            key.verify(_unb64url(sig_b64), f"{head_b64}.{body_b64}".encode(), pad, hashes.SHA256())
        except InvalidSignature:
            return "AADSTS700027: Client assertion contains an invalid signature."
        if claims.get("aud") != audience or claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return "AADSTS700021: Client assertion application identifier doesn't match."
        if float(claims.get("exp", 0)) < time.time():
            return "AADSTS700024: Client assertion is not within its valid time range."
        return None

    # -- Exchange -----------------------------------------------------------------------------

    def _invoke(self, call: Call, groups: dict[str, str]) -> Reply:
        auth = call.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens or groups["tenant"] != self.tenant_id:
            return Reply(401, {"error": {"code": "InvalidToken", "message": "The token is invalid or expired."}})
        command = (call.json() or {}).get("CmdletInput") or {}
        name, params = command.get("CmdletName"), command.get("Parameters") or {}
        if name == "Get-Mailbox":
            if "Identity" not in params:
                return Reply(200, {"value": [self._row(k, m) for k, m in list(self.mailboxes.items())[:1]]})
            mailbox = self.mailboxes.get(str(params["Identity"]).lower())
            if mailbox is None:
                return _not_found(params["Identity"])
            return Reply(200, {"@adminapi.warnings": [], "value": [self._row(params["Identity"], mailbox)]})
        if name == "Set-Mailbox":
            return self._set_mailbox(params)
        return Reply(400, {"error": {"code": "BadRequest", "message": f"The cmdlet {name} is not available."}})

    def _set_mailbox(self, params: dict[str, Any]) -> Reply:
        mailbox = self.mailboxes.get(str(params.get("Identity", "")).lower())
        if mailbox is None:
            return _not_found(params.get("Identity"))
        if mailbox.synced_from_ad:
            message = (
                f"The operation on mailbox \"{params['Identity']}\" failed because it's out of the current user's "
                "write scope. The action 'Set-Mailbox', 'UserCertificate', can't be performed on the object because "
                "the object is being synchronized from your on-premises organization."
            )
            return Reply(400, {"error": {"code": "BadRequest", "message": message, "details": [{"message": message}]}})
        for attribute, values in (("UserCertificate", mailbox.certificates), ("UserSMimeCertificate", mailbox.smime)):
            change = params.get(attribute)
            if change is None:
                continue
            if not isinstance(change, dict) or change.get("@odata.type") != HASHTABLE:
                values[:] = [base64.b64decode(v) for v in change]  # a plain list replaces everything
                continue
            for v in change.get("Remove") or []:
                if base64.b64decode(v) in values:
                    values.remove(base64.b64decode(v))
            for v in change.get("Add") or []:
                if base64.b64decode(v) not in values:
                    values.append(base64.b64decode(v))
        return Reply(200, {"@adminapi.warnings": [], "value": []})

    @staticmethod
    def _row(identity: str, mailbox: FakeMailbox) -> dict[str, Any]:
        return {
            "Identity": identity,
            "PrimarySmtpAddress": identity,
            "UserCertificate": [base64.b64encode(v).decode() for v in mailbox.certificates],
            "UserSMimeCertificate": [base64.b64encode(v).decode() for v in mailbox.smime],
        }


def app_credential(tmp: Path, name: str) -> tuple[Path, x509.Certificate]:
    """A PEM file with an RSA key and self-signed certificate, as uploaded to the app registration."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{name}.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem + certificate.public_bytes(serialization.Encoding.PEM))
    return path, certificate


def _digest(data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _not_found(identity: object) -> Reply:
    message = (
        "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be "
        f"performed because object '{identity}' couldn't be found on 'EUR01A001DC01.EUR01A001.PROD.OUTLOOK.COM'."
    )
    return Reply(404, {"error": {"code": "NotFound", "message": message, "details": [{"message": message}]}})


class _Redirect(httpx.BaseTransport):
    def __init__(self, target: str) -> None:
        self._target = httpx.URL(target)
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=self._target.host, port=self._target.port)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
