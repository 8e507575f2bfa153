"""The small typed interfaces the domain needs from the outside world.

``integrations/`` implements the CA, vault and directory ports; ``bot/`` implements
the notifier. Every method is keyword-only and its docstring names what it raises.
Constructors are cheap; ``check()`` does the fallible work (credentials,
reachability) and returns plain-language problems so ``certportal doctor`` can
report every backend without stopping at the first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class RevocationReason(enum.StrEnum):
    """RFC 5280 reason names as the CLI and Slack accept them."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"


@dataclass(frozen=True)
class Subscriber:
    """Who a certificate is for; names come from the Slack profile or the CLI."""

    mailbox: str
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class Order:
    """A CA order as the CA sees it. ``detail`` is for admins, ``user_message`` for the employee."""

    order_id: str
    status: OrderStatus
    detail: str = ""
    user_message: str = ""
    # Set when the CA is waiting on something outside our control, e.g. the
    # subscriber has to click a validation email.
    awaiting_validation: bool = False


@dataclass(frozen=True)
class IssuedCertificate:
    """The leaf and the chain above it (issuing CA first), all PEM."""

    certificate_pem: bytes
    chain_pem: tuple[bytes, ...] = ()


@runtime_checkable
class CertificateAuthority(Protocol):
    """A CA shaped for slow CAs: submit returns an order that a later poll resolves."""

    name: str

    def check(self) -> list[str]:
        """Return plain-language problems with credentials or reachability (empty if fine)."""
        ...

    def submit(self, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str) -> Order:
        """Place one order. Raises RetryLater, OutcomeUnknown, PermanentFailure."""
        ...

    def find_order(self, *, idempotency_key: str) -> Order | None:
        """Find an order placed with this key. Raises LookupUnsupported, RetryLater."""
        ...

    def poll(self, *, order_id: str) -> Order:
        """Current state of an order. Raises RetryLater, PermanentFailure."""
        ...

    def fetch(self, *, order_id: str) -> IssuedCertificate:
        """The issued certificate of an order in state ISSUED. Raises RetryLater, PermanentFailure."""
        ...

    def revoke(self, *, order_id: str, serial: str, reason: RevocationReason) -> None:
        """Revoke an issued certificate at once. Raises RetryLater, PermanentFailure."""
        ...

    def cancel(self, *, order_id: str) -> None:
        """Cancel a pending order; cancelling an order that is already final is not an error.

        Raises RetryLater, PermanentFailure.
        """
        ...

    def trust_anchors(self) -> list[bytes]:
        """PEM roots that chains from this CA must build to."""
        ...


@dataclass(frozen=True)
class VaultEntry:
    """What the vault keeps for one certificate. Never logged, never repr'd with secrets."""

    serial: str
    mailbox: str
    not_before: datetime
    not_after: datetime
    pfx: bytes = field(repr=False)
    password: str = field(repr=False)


@dataclass(frozen=True)
class VaultSecret:
    pfx: bytes = field(repr=False)
    password: str = field(repr=False)


@runtime_checkable
class Vault(Protocol):
    """Where PFX and password live once issued."""

    name: str

    def check(self) -> list[str]:
        """Return plain-language problems (empty if fine)."""
        ...

    def store(self, *, entry: VaultEntry) -> str:
        """Store ``entry`` idempotently (a resumed job never creates a duplicate) and return its reference.

        Raises RetryLater, PermanentFailure.
        """
        ...

    def retrieve(self, *, ref: str, reason: str) -> VaultSecret:
        """Read a stored secret back; ``reason`` is recorded where the vault supports it.

        Raises NotFound, RetryLater, PermanentFailure.
        """
        ...


@runtime_checkable
class DirectoryPublisher(Protocol):
    """Publishes public certificates where mail clients find them (the GAL)."""

    name: str

    def check(self) -> list[str]:
        """Return plain-language problems (empty if fine)."""
        ...

    def publish(self, *, mailbox: str, certificate_der: bytes, removable_sha256: frozenset[str]) -> None:
        """Add ``certificate_der`` and remove values whose SHA-256 fingerprint (lowercase hex)
        is in ``removable_sha256`` -- certificates this service issued that are superseded,
        expired or revoked. Never touches any other value.

        Raises NotFound (no such user), RetryLater, PermanentFailure.
        """
        ...

    def unpublish(self, *, mailbox: str, removable_sha256: frozenset[str]) -> None:
        """Remove the listed certificates only. Raises NotFound, RetryLater, PermanentFailure."""
        ...


class NotificationKind(enum.StrEnum):
    REQUEST_SUBMITTED = "request_submitted"  # to approvers
    REQUEST_APPROVED = "request_approved"  # to requester
    REQUEST_DENIED = "request_denied"
    REQUEST_EXPIRED = "request_expired"
    REQUEST_CANCELLED = "request_cancelled"
    PROVISIONING = "provisioning"  # the worker started
    AWAITING_VALIDATION = "awaiting_validation"  # the CA waits on the employee (validation email)
    CERTIFICATE_READY = "certificate_ready"
    REQUEST_FAILED = "request_failed"  # to requester and approvers
    NEEDS_RECONCILIATION = "needs_reconciliation"  # to approvers
    PUBLISH_FAILING = "publish_failing"  # to approvers
    REMINDER = "reminder"  # to the certificate's owner
    REVOKED = "revoked"  # to the owner
    OFFBOARDED = "offboarded"  # to approvers
    ADMIN_NOTICE = "admin_notice"  # to approvers


@dataclass(frozen=True)
class Notification:
    """A thing to tell people. ``text`` is a plain sentence and never holds a secret."""

    kind: NotificationKind
    text: str
    mailbox: str = ""
    request_id: str = ""
    serial: str = ""
    slack_user_id: str = ""
    not_after: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    def send(self, *, notification: Notification) -> None:
        """Deliver a notification. Raises RetryLater when the channel is down."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...
