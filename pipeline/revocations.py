"""Revocation requested from a surface that must not call the CA itself (Slack handlers, events).

The request is a ``revoke`` job; the worker revokes at the CA within seconds.
Queuing the same certificate twice while a revocation is in flight changes
nothing (one job per certificate).
"""

from __future__ import annotations

from pipeline.certificates import certificate
from pipeline.context import Pipeline
from pipeline.errors import PolicyError
from pipeline.ports import RevocationReason
from pipeline.queue import enqueue


def request_revocation(p: Pipeline, *, serial: str, reason: RevocationReason, actor: str, origin: str = "") -> bool:
    """Queue revocation of ``serial``; False when it is already revoked. Raises NotFound, PolicyError."""
    cert = certificate(p, serial)
    if cert["status"] == "revoked":
        return False
    if cert["status"] == "expired":
        raise PolicyError(f"certificate {serial} has expired; there is nothing to revoke")
    with p.store.write() as conn:
        enqueue(
            conn,
            request_id=cert["request_id"],
            kind="revoke",
            step="revoke",
            now=p.clock.now(),
            payload={"serial": cert["serial"], "reason": reason.value, "actor": actor, "origin": origin},
        )
        p.audit.append(
            conn,
            actor=actor,
            action="certificate.revocation_requested",
            subject=cert["mailbox"],
            origin=origin,
            serial=cert["serial"],
            reason=reason.value,
        )
    p.audit.anchor_latest()
    return True
