"""The certificate table: recording issuance, what is current, directory publication and revocation."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pipeline.clock import iso
from pipeline.context import Pipeline
from pipeline.errors import CertPortalError, NotFound, PermanentFailure
from pipeline.ports import Notification, NotificationKind, RevocationReason
from pipeline.queue import enqueue

Row = dict[str, Any]
RETIRED = ("superseded", "expired", "revoked")


def record_issued(
    p: Pipeline, conn: sqlite3.Connection, *, request: Row, work: Row, certificate: x509.Certificate, vault_ref: str
) -> None:
    """Inside a write transaction: add the certificate, make it current, mark the request issued."""
    now = iso(p.clock.now())
    der = certificate.public_bytes(serialization.Encoding.DER)
    serial = format(certificate.serial_number, "x")
    conn.execute(
        "INSERT INTO certificates (serial, request_id, mailbox, slack_user_id, key_type, issuer, ca_backend, "
        "order_id, not_before, not_after, sha256, cert_pem, chain_pem, vault_backend, vault_ref, status, "
        "publish_state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', "
        "'pending', ?, ?) ON CONFLICT (serial) DO NOTHING",
        (
            serial,
            request["id"],
            request["mailbox"],
            request["slack_user_id"],
            request["key_type"],
            certificate.issuer.rfc4514_string(),
            p.ca.name,
            work["order_id"],
            iso(certificate.not_valid_before_utc),
            iso(certificate.not_valid_after_utc),
            hashlib.sha256(der).hexdigest(),
            work["cert_pem"],
            work["chain_pem"] or "",
            p.vault.name,
            vault_ref,
            now,
            now,
        ),
    )
    # The newest certificate is current; older active ones stay retrievable as history.
    conn.execute(
        "UPDATE certificates SET status = 'superseded', superseded_by = ?, updated_at = ? "
        "WHERE mailbox = ? AND status = 'active' AND serial != ?",
        (serial, now, request["mailbox"], serial),
    )
    conn.execute("UPDATE requests SET state = 'issued', updated_at = ? WHERE id = ?", (now, request["id"]))
    p.audit.append(
        conn,
        actor="worker",
        action="certificate.issued",
        subject=request["mailbox"],
        request=request["id"],
        serial=serial,
        ca=p.ca.name,
        vault=p.vault.name,
        not_after=iso(certificate.not_valid_after_utc),
        lint=work.get("lint_findings") or "",
        ca_detail=work.get("ca_detail") or "",
    )


def current_certificate(p: Pipeline, mailbox: str) -> Row | None:
    return p.store.one(
        "SELECT * FROM certificates WHERE mailbox = ? AND status = 'active' ORDER BY not_after DESC LIMIT 1", (mailbox,)
    )


def earlier_certificates(p: Pipeline, mailbox: str, limit: int = 10) -> list[Row]:
    """The mailbox's certificates other than the current one, newest first.

    Their keys still open mail that was encrypted to them, so they stay retrievable.
    """
    return p.store.all(
        "SELECT * FROM certificates WHERE mailbox = ? AND status != 'active' ORDER BY not_after DESC LIMIT ?",
        (mailbox, limit),
    )


def certificate(p: Pipeline, serial: str) -> Row:
    row = p.store.one("SELECT * FROM certificates WHERE serial = ?", (serial.lower().lstrip("0") or "0",))
    if row is None:
        raise NotFound(f"no certificate with serial {serial}")
    return row


def removable_fingerprints(p: Pipeline, mailbox: str) -> frozenset[str]:
    """Our own certificates for ``mailbox`` that must leave the directory (never anyone else's)."""
    rows = p.store.all(
        "SELECT sha256 FROM certificates WHERE mailbox = ? AND status IN ('superseded', 'expired', 'revoked')",
        (mailbox,),
    )
    return frozenset(r["sha256"] for r in rows)


def publish_certificate(p: Pipeline, *, serial: str, background_on_failure: bool) -> bool:
    """Publish a certificate to the directory, dropping retired ones of ours.

    A retired certificate (expired, superseded, revoked) is removed instead, with
    the mailbox's other retired ones; a user already gone from the directory has
    nothing left to remove. A failure never fails the request: with
    ``background_on_failure`` it queues a publish job that retries with backoff.
    Returns whether it was published now.
    """
    cert = certificate(p, serial)
    active = cert["status"] == "active"
    if not active and cert["publish_state"] in ("removed", "skipped"):
        return False
    removable = removable_fingerprints(p, cert["mailbox"])
    try:
        if active:
            der = x509.load_pem_x509_certificate(cert["cert_pem"].encode()).public_bytes(serialization.Encoding.DER)
            p.directory.publish(mailbox=cert["mailbox"], certificate_der=der, removable_sha256=removable)
        else:
            with contextlib.suppress(NotFound):  # the user left the directory: nothing to remove
                p.directory.unpublish(mailbox=cert["mailbox"], removable_sha256=removable)
    except CertPortalError as exc:
        detail = getattr(exc, "admin_detail", str(exc))
        with p.store.write() as conn:
            conn.execute(
                "UPDATE certificates SET publish_state = 'failed', updated_at = ? WHERE serial = ?",
                (iso(p.clock.now()), serial),
            )
            if background_on_failure:
                enqueue(conn, request_id=cert["request_id"], kind="publish", step="publish", now=p.clock.now())
            p.audit.append(
                conn,
                actor="worker",
                action="directory.publish_failed",
                subject=cert["mailbox"],
                serial=serial,
                directory=p.directory.name,
                error=detail[:300],
            )
        p.audit.anchor_latest()
        if not background_on_failure:
            raise
        return False
    state = "skipped" if p.directory.name == "none" else ("published" if active else "removed")
    with p.store.write() as conn:
        conn.execute(
            "UPDATE certificates SET publish_state = ?, updated_at = ? WHERE serial = ?",
            (state, iso(p.clock.now()), serial),
        )
        p.audit.append(
            conn,
            actor="worker",
            action="directory.published" if active else "directory.removed",
            subject=cert["mailbox"],
            serial=serial,
            directory=p.directory.name,
        )
    p.audit.anchor_latest()
    return active


def revoke_certificate(p: Pipeline, *, serial: str, reason: RevocationReason, actor: str, origin: str = "") -> Row:
    """Revoke at the CA at once, record it, drop it from the directory and tell the owner.

    Revoking an already revoked certificate changes nothing. Raises NotFound,
    RetryLater, PermanentFailure (from the CA).
    """
    cert = certificate(p, serial)
    if cert["status"] == "revoked":
        return cert
    p.ca.revoke(order_id=cert["order_id"], serial=cert["serial"], reason=reason)
    now = iso(p.clock.now())
    with p.store.write() as conn:
        conn.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?, "
            "updated_at = ? WHERE serial = ?",
            (now, reason.value, now, cert["serial"]),
        )
        # A revoked certificate's links stop working.
        conn.execute(
            "UPDATE links SET expires_at = ? WHERE serial = ? AND used_at IS NULL AND expires_at > ?",
            (now, cert["serial"], now),
        )
        p.audit.append(
            conn,
            actor=actor,
            action="certificate.revoked",
            subject=cert["mailbox"],
            origin=origin,
            serial=cert["serial"],
            reason=reason.value,
        )
    p.audit.anchor_latest()
    try:
        p.directory.unpublish(mailbox=cert["mailbox"], removable_sha256=frozenset({cert["sha256"]}))
    except CertPortalError as exc:
        p.notifier.send(
            notification=Notification(
                kind=NotificationKind.PUBLISH_FAILING,
                mailbox=cert["mailbox"],
                serial=cert["serial"],
                text=f"Revoked certificate {cert['serial']} of {cert['mailbox']} could not be removed from the "
                f"directory: {getattr(exc, 'admin_detail', exc)}",
            )
        )
    p.notifier.send(
        notification=Notification(
            kind=NotificationKind.REVOKED,
            mailbox=cert["mailbox"],
            serial=cert["serial"],
            slack_user_id=cert["slack_user_id"],
            text=f"Your S/MIME certificate {cert['serial']} for {cert['mailbox']} has been revoked ({reason.value}).",
        )
    )
    return certificate(p, cert["serial"])


def ensure_owned(cert: Row, mailbox: str) -> None:
    if cert["mailbox"] != mailbox:
        raise PermanentFailure("That certificate is not yours.", admin_detail=f"{cert['serial']} is not {mailbox}'s")
