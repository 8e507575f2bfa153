"""One-time links to a certificate's password or PFX: creation, inspection and release.

A link is a 256-bit random token. Only its SHA-256 is stored; the token itself
exists in the URL the owner is given and nowhere else. Looking a link up never
consumes it (Slack's unfurler, mail scanners and browser prefetch all fetch
URLs); the secret is released by ``release``, which takes a CSRF token bound to
the link and marks the link used in the same write transaction that checks it
is unused, so two concurrent releases hand out the secret once. Links of a
revoked certificate stop working.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.clock import iso, parse_iso
from pipeline.context import Pipeline
from pipeline.errors import PolicyError

KINDS = ("password", "pfx")
TOKEN_BYTES = 32  # 256 bits


class LinkState(enum.StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"  # the certificate was revoked after the link was made
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LinkView:
    """What a confirmation page may show about a link; never the secret."""

    state: LinkState
    kind: str = ""
    serial: str = ""
    mailbox: str = ""
    owner_slack_id: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Released:
    """The secret behind a link, handed out exactly once."""

    kind: str
    serial: str
    mailbox: str
    password: str = field(default="", repr=False)
    pfx: bytes = field(default=b"", repr=False)


class LinkRefused(PolicyError):
    """The link cannot release its secret; ``state`` says why (used, expired, unknown, bad CSRF)."""

    def __init__(self, state: LinkState | str) -> None:
        super().__init__(f"link {state}")
        self.state = state


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token_shaped(token: str) -> bool:
    """Cheap filter before any database work: url-safe base64 of the right length."""
    return len(token) == 43 and all(c.isalnum() or c in "-_" for c in token)


def create_link(p: Pipeline, *, kind: str, serial: str, owner_slack_id: str, actor: str) -> tuple[str, datetime]:
    """Create a one-time link for the owner of certificate ``serial``; returns (token, expires_at).

    Raises PolicyError for an unknown kind or a certificate that is missing or revoked.
    """
    if kind not in KINDS:
        raise PolicyError(f"unknown link kind {kind!r}")
    cert = p.store.one("SELECT serial, mailbox, status FROM certificates WHERE serial = ?", (serial,))
    if cert is None:
        raise PolicyError(f"no certificate with serial {serial}")
    if cert["status"] == "revoked":
        raise PolicyError("that certificate has been revoked; its password and file are no longer handed out")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = p.clock.now()
    expires = now + timedelta(minutes=p.settings.links.ttl_minutes)
    with p.store.write() as conn:
        conn.execute(
            "INSERT INTO links (token_sha256, kind, serial, owner_slack_id, mailbox, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_hash(token), kind, cert["serial"], owner_slack_id, cert["mailbox"], iso(now), iso(expires)),
        )
        p.audit.append(
            conn,
            actor=actor,
            action="link.created",
            subject=cert["mailbox"],
            serial=cert["serial"],
            kind=kind,
            owner=owner_slack_id,
            expires=iso(expires),
        )
    p.audit.anchor_latest()
    return token, expires


def inspect(p: Pipeline, token: str) -> LinkView:
    """Describe a link without consuming it."""
    if not is_token_shaped(token):
        return LinkView(LinkState.UNKNOWN)
    row = p.store.one(
        "SELECT l.*, c.status AS cert_status FROM links l LEFT JOIN certificates c ON c.serial = l.serial "
        "WHERE l.token_sha256 = ?",
        (token_hash(token),),
    )
    if row is None:
        return LinkView(LinkState.UNKNOWN)
    expires = parse_iso(row["expires_at"])
    if row["used_at"]:
        state = LinkState.USED
    elif row["cert_status"] in (None, "revoked"):
        state = LinkState.REVOKED
    elif expires <= p.clock.now():
        state = LinkState.EXPIRED
    else:
        state = LinkState.VALID
    return LinkView(state, row["kind"], row["serial"], row["mailbox"], row["owner_slack_id"], expires)


def csrf_token(p: Pipeline, token: str) -> str:
    """A form token bound to this link, derived from the master key (stateless, nothing stored)."""
    return hmac.new(_csrf_key(p), b"link-form:" + token_hash(token).encode(), hashlib.sha256).hexdigest()


def csrf_ok(p: Pipeline, token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(p, token), presented or "")


def release(p: Pipeline, *, token: str, csrf: str, client: str = "") -> Released:
    """Hand out the secret behind a valid link exactly once. Raises LinkRefused, or the vault's errors.

    The vault is read first so a vault outage does not burn the link; the secret
    is returned only if this call is the one that marks the link used.
    """
    if not csrf_ok(p, token, csrf):
        raise LinkRefused("forged")
    view = inspect(p, token)
    if view.state is not LinkState.VALID:
        raise LinkRefused(view.state)
    cert = p.store.one("SELECT vault_ref FROM certificates WHERE serial = ?", (view.serial,))
    if cert is None:
        raise LinkRefused(LinkState.REVOKED)
    reason = f"CertPortal one-time link: {view.kind} of {view.serial} for {view.mailbox}"
    secret = p.vault.retrieve(ref=cert["vault_ref"], reason=reason)
    now = iso(p.clock.now())
    with p.store.write() as conn:
        claimed = conn.execute(
            "UPDATE links SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL AND expires_at > ? "
            "AND EXISTS (SELECT 1 FROM certificates c WHERE c.serial = links.serial AND c.status != 'revoked')",
            (now, token_hash(token), now),
        ).rowcount
        if claimed == 1:
            p.audit.append(
                conn,
                actor=view.owner_slack_id or "link",
                action="link.revealed" if view.kind == "password" else "link.downloaded",
                subject=view.mailbox,
                origin=client,
                serial=view.serial,
                owner=view.owner_slack_id,
            )
    if claimed != 1:
        raise LinkRefused(inspect(p, token).state)
    p.audit.anchor_latest()
    if view.kind == "password":
        return Released(view.kind, view.serial, view.mailbox, password=secret.password)
    return Released(view.kind, view.serial, view.mailbox, pfx=secret.pfx)


def _csrf_key(p: Pipeline) -> bytes:
    base = p.box.audit_keys()[p.box.signing_audit_key_id]
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"certportal link csrf v1").derive(base)


class FailedLookupLimiter:
    """Bounds failed link lookups per client (sliding one-minute window) so tokens cannot be guessed at speed.

    Memory is bounded: at most ``max_clients`` clients are tracked, the least
    recently seen dropped first.
    """

    def __init__(
        self, per_minute: int, *, max_clients: int = 10_000, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._now = now
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may look links up again (0 when it may now)."""
        with self._lock:
            window = self._window(client)
            if window is None or len(window) < self.per_minute:
                return 0.0
            return max(0.0, window[0] + 60.0 - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            window = self._window(client)
            if window is None:
                window = deque()
                self._failures[client] = window
                while len(self._failures) > self.max_clients:
                    self._failures.popitem(last=False)
            window.append(self._clock())
            self._failures.move_to_end(client)

    def _window(self, client: str) -> deque[float] | None:
        window = self._failures.get(client)
        if window is None:
            return None
        cutoff = self._clock() - 60.0
        while window and window[0] <= cutoff:
            window.popleft()
        return window

    def _clock(self) -> float:
        return self._now()
