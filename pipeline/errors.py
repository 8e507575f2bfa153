"""One error root for CertPortal, split into "try again later" and "this will never work".

Exceptions carry data as attributes and never log or touch the outside world in
their constructor. ``admin_detail`` may hold a vendor's own message for operators;
``user_reason`` is a plain sentence safe to show an employee. Neither ever holds a
secret.
"""

from __future__ import annotations


class CertPortalError(Exception):
    """Root of every error CertPortal raises on purpose."""


class ConfigError(CertPortalError):
    """The settings are invalid; the message says which setting and why."""


class PolicyError(CertPortalError):
    """Bad input or a request that policy refuses; nothing was changed."""


class NotFound(CertPortalError):
    """The thing asked for does not exist (no such mailbox, certificate, link...)."""


class RetryLater(CertPortalError):
    """A transient failure: the same call may succeed after ``delay`` seconds."""

    def __init__(self, admin_detail: str, *, delay: float | None = None) -> None:
        super().__init__(admin_detail)
        self.admin_detail = admin_detail
        self.delay = delay


class OutcomeUnknown(RetryLater):
    """A call may or may not have taken effect (timeout after sending, lost response).

    For an order this is resolved by looking the order up, never by ordering again.
    """


class PermanentFailure(CertPortalError):
    """This will never work as asked; ``user_reason`` is what the employee is told."""

    def __init__(self, user_reason: str, *, admin_detail: str | None = None) -> None:
        super().__init__(admin_detail or user_reason)
        self.user_reason = user_reason
        self.admin_detail = admin_detail or user_reason


class NeedsReconciliation(PermanentFailure):
    """An order's fate is unknown and the CA cannot be asked: park the request for an admin.

    Never answered by placing a second order.
    """


class LookupUnsupported(CertPortalError):
    """The backend cannot search for an order by idempotency key."""
