"""A fake CyberArk PVWA (Gen2 REST API): logon/logoff, accounts, search, retrieve and update.

Shapes follow the vendor reference: logon answers a bare JSON string (the session
token), every other call needs ``Authorization: <token>`` without a scheme, errors
are ``{"ErrorCode": "PASWS...E", "ErrorMessage": "..."}``, an expired session is 401
PASWS006E, a duplicate account name 409, and a platform that requires a reason
refuses a retrieval without one. Like the real vault, stored values are trimmed.
Error codes other than PASWS006E and PASWS204E are stand-ins.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import Any

from tests.fakes.server import Call, FakeServer, Reply

API = "/PasswordVault/API"
PROPERTIES = {"CertSerial", "Mailbox", "CertCreated", "CertExpires", "CertPart"}


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"ErrorCode": code, "ErrorMessage": message})


EXPIRED = _error(401, "PASWS006E", "The session token is missing, invalid or expired.")


class FakeCyberArk(FakeServer):
    def __init__(
        self,
        *,
        username: str = "svc-certportal",
        password: str = "pw-1",
        safe: str = "SMIME-Keys",
        platform: str = "CertPortal-SMIME",
    ) -> None:
        super().__init__()
        self.credentials = (username, password)
        self.safes = {safe}
        self.platforms = {platform}
        self.require_reason = True
        self.accounts: dict[str, dict[str, Any]] = {}
        self.retrievals: list[tuple[str, str]] = []  # (account id, reason)
        self.tokens: set[str] = set()
        self.logoffs = 0
        self._ids = itertools.count(1)
        r = self.route
        r("POST", rf"{API}/Auth/(?P<method>[^/]+)/Logon", self._logon)
        r("POST", rf"{API}/Auth/Logoff", self._logoff)
        r("GET", rf"{API}/Safes/(?P<safe>[^/]+)/?", self._safe)
        r("POST", rf"{API}/Accounts", self._add)
        r("GET", rf"{API}/Accounts", self._search)
        r("POST", rf"{API}/Accounts/(?P<id>[^/]+)/Password/Retrieve", self._retrieve)
        r("POST", rf"{API}/Accounts/(?P<id>[^/]+)/Password/Update", self._update)
        r("DELETE", rf"{API}/Accounts/(?P<id>[^/]+)", self._delete)

    def reset(self) -> None:
        with self.lock:
            self.accounts.clear()
            self.retrievals.clear()
            self.tokens.clear()
            self.calls.clear()
            self._faults.clear()
            self.logoffs = 0
            self.require_reason = True

    def expire_sessions(self) -> None:
        with self.lock:
            self.tokens.clear()

    def secret_of(self, name: str) -> str:
        return next(a["secret"] for a in self.accounts.values() if a["name"] == name)

    # -- handlers ---------------------------------------------------------------------------

    def _authorised(self, call: Call) -> bool:
        return call.headers.get("authorization", "") in self.tokens

    def _logon(self, call: Call, groups: dict[str, str]) -> Reply:
        if groups["method"].lower() not in ("cyberark", "ldap"):
            return _error(404, "PASWS999E", "Unknown authentication method.")
        body = call.json() or {}
        if (body.get("username"), body.get("password")) != self.credentials:
            return _error(403, "ITATS004E", f"Authentication failure for User [{body.get('username')}].")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Reply(200, json.dumps(token))  # a bare JSON string

    def _logoff(self, call: Call, _: dict[str, str]) -> Reply:
        self.tokens.discard(call.headers.get("authorization", ""))
        self.logoffs += 1
        return Reply(200, {})

    def _safe(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        if groups["safe"] not in self.safes:
            return _error(404, "SFWS0002E", f"Safe {groups['safe']} was not found.")
        return Reply(200, {"safeName": groups["safe"], "numberOfVersionsRetention": 5})

    def _add(self, call: Call, _: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        body = call.json() or {}
        if body.get("safeName") not in self.safes:
            return _error(404, "PASWS167E", "Safe was not found.")
        if body.get("platformId") not in self.platforms:
            return _error(400, "PASWS168E", "Platform was not found.")
        unknown = set(body.get("platformAccountProperties") or {}) - PROPERTIES
        if unknown:
            return _error(400, "PASWS170E", f"Property {sorted(unknown)[0]} is not defined on the platform.")
        name = body.get("name") or f"generated-{next(self._ids)}"
        if any(a["name"] == name and a["safeName"] == body["safeName"] for a in self.accounts.values()):
            return _error(409, "PASWS027E", f"The account {name} already exists.")
        account_id = f"25_{next(self._ids)}"
        account = {
            "id": account_id,
            "name": name,
            "address": body.get("address", ""),
            "userName": body.get("userName", ""),
            "platformId": body["platformId"],
            "safeName": body["safeName"],
            "secretType": body.get("secretType", "password"),
            "platformAccountProperties": dict(body.get("platformAccountProperties") or {}),
            "secretManagement": {**(body.get("secretManagement") or {}), "lastModifiedTime": int(time.time())},
            "createdTime": int(time.time()),
        }
        self.accounts[account_id] = {**account, "secret": str(body.get("secret", "")).strip()}
        return Reply(201, account)

    def _search(self, call: Call, _: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        words = call.query.get("search", [""])[0].lower().split()
        flt = call.query.get("filter", [""])[0]
        safe = flt[len("safeName eq ") :] if flt.startswith("safeName eq ") else None
        limit = min(int(call.query.get("limit", ["50"])[0]), 1000)
        offset = int(call.query.get("offset", ["0"])[0])
        found = [
            {k: v for k, v in a.items() if k != "secret"}
            for a in self.accounts.values()
            if (safe is None or a["safeName"] == safe)
            and all(w in f"{a['name']} {a['userName']} {a['address']}".lower() for w in words)
        ]
        return Reply(200, {"value": found[offset : offset + limit], "count": len(found)})

    def _retrieve(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        account = self.accounts.get(groups["id"])
        if account is None:
            return _error(404, "PASWS165E", "The account was not found.")
        reason = (call.json() or {}).get("reason", "")
        if self.require_reason and not reason:
            return _error(400, "PASWS204E", "You must specify a reason for this operation.")
        self.retrievals.append((groups["id"], reason))
        return Reply(200, json.dumps(account["secret"]))  # a JSON string literal

    def _update(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        account = self.accounts.get(groups["id"])
        if account is None:
            return _error(404, "PASWS165E", "The account was not found.")
        account["secret"] = str((call.json() or {}).get("NewCredentials", "")).strip()
        return Reply(200, {})

    def _delete(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return EXPIRED
        return Reply(204) if self.accounts.pop(groups["id"], None) else _error(404, "PASWS165E", "Not found.")
