"""A fake HashiCorp Vault: KV v2 (versions, check-and-set, custom metadata), tokens and AppRole.

Shapes follow the KV v2 API docs: reads answer ``{"data": {"data", "metadata"}}``,
writes ``{"data": {version metadata}}``, errors ``{"errors": [...]}`` (a lost CAS
race is 400 "check-and-set parameter did not match the current version", an
unknown or expired token 403 "permission denied"). Tests can expire tokens and
inject faults through ``FakeServer``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import Call, FakeServer, Reply


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class KvKey:
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    current_version: int = 0
    custom_metadata: dict[str, str] = field(default_factory=dict)
    max_versions: int = 10

    def version_meta(self, n: int) -> dict[str, Any]:
        v = self.versions[n]
        return {
            "created_time": v["created_time"],
            "custom_metadata": dict(self.custom_metadata) or None,
            "deletion_time": v["deletion_time"],
            "destroyed": v["destroyed"],
            "version": n,
        }


DENIED = Reply(403, {"errors": ["permission denied"]})


class FakeHashiCorpVault(FakeServer):
    def __init__(self, *, mount: str = "secret", role_id: str = "role-1", secret_id: str = "secret-1") -> None:
        super().__init__()
        self.mount = mount
        self.root_token = "hvs." + secrets.token_urlsafe(16)
        self.tokens: set[str] = {self.root_token}
        self.approle = (role_id, secret_id)
        self.kv: dict[str, KvKey] = {}
        self.cas_required = False
        # Called with the path just before a data write is applied: a concurrent writer.
        self.before_write: Callable[[str], None] | None = None
        self.route("POST", r"/v1/auth/approle/login", self._login)
        self.route("GET", r"/v1/auth/token/lookup-self", self._lookup_self)
        self.route("GET", r"/v1/sys/internal/ui/mounts/(?P<mount>.+)", self._mount_info)
        self.route("GET", rf"/v1/{mount}/data/(?P<path>.+)", self._read)
        self.route("POST", rf"/v1/{mount}/data/(?P<path>.+)", self._write)
        self.route("DELETE", rf"/v1/{mount}/data/(?P<path>.+)", self._soft_delete)
        self.route("GET", rf"/v1/{mount}/metadata/(?P<path>.+)", self._read_metadata)
        self.route("POST", rf"/v1/{mount}/metadata/(?P<path>.+)", self._write_metadata)

    # -- test controls --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every secret, token, call and pending fault (for a server shared by tests)."""
        with self.lock:
            self.kv.clear()
            self.tokens = {self.root_token}
            self.calls.clear()
            self._faults.clear()
            self.cas_required = False
            self.before_write = None

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (AppRole can log in again)."""
        with self.lock:
            self.tokens.clear()

    def put(self, path: str, data: dict[str, Any], custom_metadata: dict[str, str] | None = None) -> None:
        """Place a secret directly, as another writer would."""
        with self.lock:
            key = self.kv.setdefault(path, KvKey())
            if custom_metadata is not None:
                key.custom_metadata = dict(custom_metadata)
            self._add_version(key, data)

    # -- handlers ---------------------------------------------------------------------------

    def _authorised(self, call: Call) -> bool:
        return call.headers.get("x-vault-token", "") in self.tokens

    def _login(self, call: Call, _: dict[str, str]) -> Reply:
        body = call.json() or {}
        if (body.get("role_id"), body.get("secret_id")) != self.approle:
            return Reply(400, {"errors": ["invalid role or secret ID"]})
        token = "hvs." + secrets.token_urlsafe(16)
        self.tokens.add(token)
        auth = {"client_token": token, "accessor": "acc", "policies": ["certportal"], "lease_duration": 3600}
        return Reply(200, {"auth": {**auth, "renewable": True}, "data": None})

    def _lookup_self(self, call: Call, _: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        return Reply(200, {"data": {"policies": ["certportal"], "ttl": 3600}})

    def _mount_info(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call) or groups["mount"].strip("/") != self.mount:
            return Reply(
                403,
                {
                    "errors": [
                        "preflight capability check returned 403, please ensure client's policies "
                        'grant access to path "' + groups["mount"] + '/"'
                    ]
                },
            )
        return Reply(200, {"data": {"type": "kv", "path": self.mount + "/", "options": {"version": "2"}}})

    def _read(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        key = self.kv.get(groups["path"])
        if key is None or key.current_version == 0:
            return Reply(404, {"errors": []})
        wanted = int(call.query.get("version", [key.current_version])[0])
        if wanted not in key.versions:
            return Reply(404, {"errors": []})
        meta = key.version_meta(wanted)
        version = key.versions[wanted]
        if version["deletion_time"] or version["destroyed"]:
            return Reply(404, {"data": {"data": None, "metadata": meta}})
        return Reply(200, {"data": {"data": dict(version["data"]), "metadata": meta}})

    def _write(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        body = call.json() or {}
        if not isinstance(body.get("data"), dict):
            return Reply(400, {"errors": ["no data provided"]})
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(groups["path"])
        key = self.kv.setdefault(groups["path"], KvKey())
        cas = (body.get("options") or {}).get("cas")
        if cas is None and self.cas_required:
            return Reply(400, {"errors": ["check-and-set parameter required for this call"]})
        if cas is not None and int(cas) != key.current_version:
            return Reply(400, {"errors": ["check-and-set parameter did not match the current version"]})
        n = self._add_version(key, body["data"])
        return Reply(200, {"data": key.version_meta(n)})

    def _soft_delete(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        key = self.kv.get(groups["path"])
        if key is not None and key.current_version:
            key.versions[key.current_version]["deletion_time"] = _now()
        return Reply(204)

    def _read_metadata(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        key = self.kv.get(groups["path"])
        if key is None:
            return Reply(404, {"errors": []})
        versions = {str(n): key.version_meta(n) for n in key.versions}
        data = {"current_version": key.current_version, "max_versions": key.max_versions, "versions": versions}
        return Reply(200, {"data": {**data, "custom_metadata": dict(key.custom_metadata) or None}})

    def _write_metadata(self, call: Call, groups: dict[str, str]) -> Reply:
        if not self._authorised(call):
            return DENIED
        body = call.json() or {}
        custom = body.get("custom_metadata") or {}
        if len(custom) > 64 or any(len(k) > 128 or len(str(v)) > 512 for k, v in custom.items()):
            return Reply(400, {"errors": ["custom_metadata exceeds the key or value limits"]})
        key = self.kv.setdefault(groups["path"], KvKey())
        if "custom_metadata" in body:
            key.custom_metadata = {str(k): str(v) for k, v in custom.items()}
        if body.get("max_versions"):
            key.max_versions = int(body["max_versions"])
        return Reply(204)

    @staticmethod
    def _add_version(key: KvKey, data: dict[str, Any]) -> int:
        key.current_version += 1
        n = key.current_version
        key.versions[n] = {"data": dict(data), "created_time": _now(), "deletion_time": "", "destroyed": False}
        for old in sorted(key.versions)[: max(0, len(key.versions) - key.max_versions)]:
            del key.versions[old]
        return n
