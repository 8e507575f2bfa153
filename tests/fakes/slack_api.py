"""A fake Slack Web API on loopback: answers like Slack (``{"ok": false, "error": ...}``, 429 + Retry-After) and records every call.

Serves ``/api/<method>`` for the methods CertPortal uses and ``/response/<id>``
for response_url posts. Tests add users and user groups, read back messages,
ephemeral replies, modals and App Home views, and scan every recorded body for
secrets.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import struct
import threading
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.server import Call, FakeServer, Reply

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test-token"


class FakeSlack(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []  # chat.postEphemeral and response_url posts
        self.views_opened: list[dict[str, Any]] = []
        self.home_views: dict[str, dict[str, Any]] = {}
        self._ts = itertools.count(1)
        self._used_triggers: set[str] = set()
        self.socket_mode: FakeSocketMode | None = None
        self.route("POST", r"/response/(?P<rid>[\w.-]+)", self._response_url)
        for method in ("GET", "POST"):
            self.route(method, r"/api/(?P<name>[\w.]+)", self._api)

    # -- test helpers ---------------------------------------------------------
    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.url}/response/{name}"

    def add_user(
        self,
        user_id: str,
        email: str,
        *,
        first: str = "Test",
        last: str = "User",
        **flags: bool,
    ) -> dict[str, Any]:
        user = {
            "id": user_id,
            "team_id": "T1",
            "name": email.split("@")[0],
            "deleted": flags.get("deleted", False),
            "is_bot": flags.get("is_bot", False),
            "is_restricted": flags.get("is_restricted", False),
            "is_ultra_restricted": flags.get("is_ultra_restricted", False),
            "profile": {"email": email, "first_name": first, "last_name": last, "real_name": f"{first} {last}"},
        }
        self.users[user_id] = user
        return user

    def api_calls(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every call to Web API method ``name``."""
        return [_args(c) for c in self.calls if c.path == f"/api/{name}"]

    def dm_texts(self, user_id: str) -> list[str]:
        return [m["text"] for (channel, _), m in self.messages.items() if channel == f"D{user_id}"]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        return [m for (ch, _), m in self.messages.items() if ch == channel]

    def recorded_text(self) -> str:
        """Every byte sent to Slack, as text, for secret scans."""
        return "\n".join(c.body.decode("utf-8", "replace") + json.dumps(c.query) for c in self.calls)

    # -- Web API --------------------------------------------------------------
    def _api(self, call: Call, params: dict[str, str]) -> Reply:
        name = params["name"]
        if name == "apps.connections.open":
            if call.headers.get("authorization") != f"Bearer {APP_TOKEN}" or self.socket_mode is None:
                return _ok_false("invalid_auth")
            return Reply(200, {"ok": True, "url": self.socket_mode.url})
        if call.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            return _ok_false("invalid_auth")
        handler = getattr(self, "_m_" + name.replace(".", "_"), None)
        if handler is None:
            return _ok_false("unknown_method")
        return Reply(200, handler(_args(call)))

    def _m_auth_test(self, a: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://acme.slack.com/",
            "team": "Acme",
            "user": "certportal",
            "team_id": "T1",
            "user_id": "UBOT",
            "bot_id": "BBOT",
        }

    def _m_users_info(self, a: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(a.get("user", ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_users_lookupByEmail(self, a: dict[str, Any]) -> dict[str, Any]:
        for user in self.users.values():
            if user["profile"]["email"].lower() == str(a.get("email", "")).lower():
                return {"ok": True, "user": user}
        return {"ok": False, "error": "users_not_found"}

    def _m_conversations_open(self, a: dict[str, Any]) -> dict[str, Any]:
        users = str(a.get("users", ""))
        if users not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": f"D{users}"}}

    def _m_chat_postMessage(self, a: dict[str, Any]) -> dict[str, Any]:
        channel = str(a.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not a.get("text") and not a.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = f"1700000000.{next(self._ts):06d}"
        message = {"channel": channel, "ts": ts, "text": a.get("text", ""), "blocks": _blocks(a), "updates": 0}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message["text"], "ts": ts}}

    def _m_chat_update(self, a: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((str(a.get("channel")), str(a.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update(text=a.get("text", ""), blocks=_blocks(a), updates=message["updates"] + 1)
        return {"ok": True, "channel": a["channel"], "ts": a["ts"], "text": message["text"]}

    def _m_chat_postEphemeral(self, a: dict[str, Any]) -> dict[str, Any]:
        if a.get("user") not in self.users:
            return {"ok": False, "error": "user_not_in_channel"}
        self.ephemerals.append(
            {
                "via": "chat.postEphemeral",
                "user": a["user"],
                "channel": a.get("channel"),
                "text": a.get("text", ""),
                "blocks": _blocks(a),
            }
        )
        return {"ok": True, "message_ts": f"1700000000.{next(self._ts):06d}"}

    def _m_views_open(self, a: dict[str, Any]) -> dict[str, Any]:
        trigger = str(a.get("trigger_id") or "")
        if not trigger:
            return {"ok": False, "error": "invalid_arguments"}
        if trigger in self._used_triggers:
            return {"ok": False, "error": "exchanged_trigger_id"}
        self._used_triggers.add(trigger)
        view = a.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        self.views_opened.append(view)
        return {"ok": True, "view": {**view, "id": f"V{len(self.views_opened)}"}}

    def _m_views_publish(self, a: dict[str, Any]) -> dict[str, Any]:
        view = a.get("view")
        self.home_views[str(a.get("user_id"))] = json.loads(view) if isinstance(view, str) else view
        return {"ok": True, "view": {"id": "VHOME"}}

    def _m_usergroups_users_list(self, a: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(str(a.get("usergroup", "")))
        if members is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(members)}

    # -- response_url -----------------------------------------------------------
    def _response_url(self, call: Call, params: dict[str, str]) -> Reply:
        body = call.json()
        self.ephemerals.append({"via": "response_url", "name": params["rid"], **body})
        return Reply(200, "ok", content_type="text/plain")


def _args(call: Call) -> dict[str, Any]:
    args: dict[str, Any] = {k: v[0] for k, v in call.query.items()}
    if call.body:
        ctype = call.headers.get("content-type", "")
        if "json" in ctype:
            args.update(json.loads(call.body))
        else:
            args.update({k: v[0] for k, v in parse_qs(call.body.decode()).items()})
    return args


def _blocks(a: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = a.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def _ok_false(error: str) -> Reply:
    return Reply(200, {"ok": False, "error": error})


def button_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["text"]["text"] for b in blocks if b.get("type") == "actions" for e in b["elements"]]


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b.get("type") == "actions" for e in b["elements"]]


class FakeSocketMode:
    """Slack's Socket Mode end: a loopback WebSocket that says hello, sends envelopes and collects acks."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._conn: socket.socket | None = None
        self.connected = threading.Event()
        self.acks: dict[str, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link/?ticket=test"

    def start(self) -> FakeSocketMode:
        self._thread.start()
        return self

    def stop(self) -> None:
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()

    def send_envelope(self, envelope_id: str, kind: str, payload: dict[str, Any]) -> None:
        message = {"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": True}
        self._send(0x1, json.dumps(message).encode())

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        self._conn = conn
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()  # noqa: S324
        conn.sendall(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self._send(0x1, json.dumps({"type": "hello", "num_connections": 1}).encode())
        self.connected.set()
        try:
            while True:
                opcode, data = self._read_frame(conn)
                if opcode == 0x8:
                    return
                if opcode == 0x9:
                    self._send(0xA, data)
                elif opcode == 0x1:
                    ack = json.loads(data)
                    self.acks[ack.get("envelope_id", "")] = ack
        except OSError:
            return

    def _send(self, opcode: int, data: bytes) -> None:
        assert self._conn is not None
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([len(data)])
        elif len(data) < 65536:
            header += bytes([126]) + struct.pack(">H", len(data))
        else:
            header += bytes([127]) + struct.pack(">Q", len(data))
        self._conn.sendall(header + data)

    @staticmethod
    def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
        def exactly(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            return buf

        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", exactly(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", exactly(8))[0]
        mask = exactly(4) if second & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(length)))
        return first & 0x0F, data
