"""The provisioning state machine.

``password -> key -> csr -> order -> wait -> fetch -> verify -> bundle -> vault -> publish -> notify``

Each step reads the request's work row, does its one thing and returns the
columns to save; the runner (``pipeline/worker.py``) saves them and the next step
name in one transaction, so a crash anywhere resumes at the step that did not
finish. Secrets are encrypted before they are first written and wiped once the
vault copy has been read back and compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pipeline.certificates import publish_certificate, record_issued
from pipeline.clock import iso, parse_iso
from pipeline.context import Pipeline
from pipeline.crypto.csr import build_csr
from pipeline.crypto.keys import PrivateKey, generate_key, key_from_der, key_to_der
from pipeline.crypto.passwords import generate_password
from pipeline.crypto.pkcs12 import build_pfx
from pipeline.errors import (
    LookupUnsupported,
    NeedsReconciliation,
    OutcomeUnknown,
    PermanentFailure,
    RetryLater,
)
from pipeline.ports import Notification, NotificationKind, OrderStatus, Subscriber, VaultEntry
from pipeline.verify import VerificationFailed, verify_issued

# A step may return this key with a callable(conn) to run inside the saving transaction.
IN_TRANSACTION = "_in_transaction"
STEPS = ("password", "key", "csr", "order", "wait", "fetch", "verify", "bundle", "vault", "publish", "notify")
VALIDATION_REMINDER_AFTER = timedelta(days=2)


class Reschedule(Exception):
    """Not a failure: run this step again after ``delay`` seconds (a pending CA order)."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


Row = dict[str, Any]
Step = Callable[[Pipeline, Row, Row], Row]


def idempotency_key(request_id: str) -> str:
    return f"certportal-{request_id}"


def _secret(p: Pipeline, work: Row, column: str) -> bytes:
    return p.box.decrypt(work[column])


def _key(p: Pipeline, work: Row) -> PrivateKey:
    return key_from_der(_secret(p, work, "key_enc"))


def step_password(p: Pipeline, request: Row, work: Row) -> Row:
    c = p.settings.crypto
    return {"password_enc": p.box.encrypt(generate_password(c.password_length, c.password_alphabet).encode())}


def step_key(p: Pipeline, request: Row, work: Row) -> Row:
    return {"key_enc": p.box.encrypt(key_to_der(generate_key(request["key_type"])))}


def step_csr(p: Pipeline, request: Row, work: Row) -> Row:
    return {"csr_pem": build_csr(_key(p, work), request["mailbox"], p.settings.crypto.signature_hash).decode()}


def step_order(p: Pipeline, request: Row, work: Row) -> Row:
    """Place exactly one order: intent first, then look up before any second attempt."""
    key = idempotency_key(request["id"])
    if work["order_intent_at"]:
        try:
            existing = p.ca.find_order(idempotency_key=key)
        except LookupUnsupported:
            raise NeedsReconciliation(
                "Your request needs a quick check by IT before it can continue.",
                admin_detail=f"an order for {request['mailbox']} may have been placed at {p.ca.name} "
                f"(idempotency key {key}) and the CA cannot be searched; check the CA and run "
                f"`certportal reconcile {request['id']}`",
            ) from None
        if existing is not None:
            return {"order_id": existing.order_id}
    else:
        save_work(p, request["id"], {"order_intent_at": iso(p.clock.now())})
    subscriber = Subscriber(request["mailbox"], request["first_name"], request["last_name"])
    try:
        order = p.ca.submit(csr_pem=work["csr_pem"].encode(), subscriber=subscriber, idempotency_key=key)
    except OutcomeUnknown:
        raise  # the retry goes through find_order above
    p.hook("order:submitted")
    p.audit.record(
        actor="worker",
        action="ca.order.placed",
        subject=request["mailbox"],
        request=request["id"],
        ca=p.ca.name,
        order=order.order_id,
    )
    return {"order_id": order.order_id}


def step_wait(p: Pipeline, request: Row, work: Row) -> Row:
    order = p.ca.poll(order_id=work["order_id"])
    if order.status == OrderStatus.ISSUED:
        return {"awaiting_validation_since": None, "ca_detail": order.detail[:1000]}
    if order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
        raise PermanentFailure(
            order.user_message or "The certificate authority rejected the request.",
            admin_detail=f"{p.ca.name} order {order.order_id} {order.status}: {order.detail}",
        )
    now = p.clock.now()
    if order.awaiting_validation:
        _chase_validation(p, request, work, now)
    save_work(p, request["id"], {"polls": work["polls"] + 1})
    base = p.settings.ca.poll_interval_seconds
    raise Reschedule(min(3600.0, base * (2 ** min(work["polls"], 10))))


def _chase_validation(p: Pipeline, request: Row, work: Row, now: Any) -> None:
    """The CA waits on the employee: tell them once, remind once, give up after ``[ca] pending_days``."""
    since = work["awaiting_validation_since"]
    text = (
        f"{p.ca.name} has sent a validation email to {request['mailbox']}. "
        "Please open it and follow the link so your certificate can be issued."
    )
    if not since:
        save_work(p, request["id"], {"awaiting_validation_since": iso(now)})
        tell(p, request, NotificationKind.AWAITING_VALIDATION, text)
        return
    waited = now - parse_iso(since)
    if waited > timedelta(days=p.settings.ca.pending_days):
        p.ca.cancel(order_id=work["order_id"])
        raise PermanentFailure(
            f"The mailbox validation email was not answered within {p.settings.ca.pending_days} days.",
            admin_detail=f"{p.ca.name} order {work['order_id']} waited on mailbox validation since {since}; cancelled",
        )
    if waited > VALIDATION_REMINDER_AFTER and not work["validation_reminded_at"]:
        save_work(p, request["id"], {"validation_reminded_at": iso(now)})
        tell(p, request, NotificationKind.AWAITING_VALIDATION, "Reminder: " + text)


def step_fetch(p: Pipeline, request: Row, work: Row) -> Row:
    issued = p.ca.fetch(order_id=work["order_id"])
    return {"cert_pem": issued.certificate_pem.decode(), "chain_pem": b"".join(issued.chain_pem).decode()}


def step_verify(p: Pipeline, request: Row, work: Row) -> Row:
    chain = [c.public_bytes(serialization.Encoding.PEM) for c in _chain(work)]
    try:
        verified = verify_issued(
            certificate_pem=work["cert_pem"].encode(),
            chain_pem=chain,
            key=_key(p, work),
            mailbox=request["mailbox"],
            anchors_pem=p.ca.trust_anchors(),
            now=p.clock.now(),
            waivers=lint_waivers(p),
        )
    except VerificationFailed as exc:
        raise PermanentFailure(
            "The certificate the CA returned did not pass our checks; IT has been told.",
            admin_detail=f"verify failed: {exc}",
        ) from None
    findings = "; ".join(map(str, verified.warnings))
    if verified.warnings:
        p.notifier.send(
            notification=Notification(
                kind=NotificationKind.ADMIN_NOTICE,
                mailbox=request["mailbox"],
                request_id=request["id"],
                text=f"The certificate for {request['mailbox']} passed verification with lint warnings: {findings}",
            )
        )
    return {"lint_findings": findings, "serial": format(verified.certificate.serial_number, "x")}


def lint_waivers(p: Pipeline) -> frozenset[str]:
    """Findings an operator waived for the embedded CA's own certificates; none for a commercial CA."""
    return frozenset(p.settings.ca.local.lint_waivers) if p.ca.name == "local" else frozenset()


def step_bundle(p: Pipeline, request: Row, work: Row) -> Row:
    # No reload here: load_pkcs12 re-validates an RSA key, ~140 ms of GIL-held
    # CPU per certificate. The vault step compares the stored bytes with these,
    # `certportal doctor` proves the configured profile round-trips, and the
    # tests open every profile with OpenSSL.
    c = p.settings.crypto
    key, cert, password = _key(p, work), _cert(work), _secret(p, work, "password_enc").decode()
    pfx = build_pfx(
        key=key,
        certificate=cert,
        chain=_chain(work),
        password=password,
        profile=c.pkcs12_profile,
        friendly_name=c.friendly_name.format(mailbox=request["mailbox"]),
        kdf_rounds=c.pkcs12_kdf_rounds,
    )
    return {"pfx_enc": p.box.encrypt(pfx)}


def step_vault(p: Pipeline, request: Row, work: Row) -> Row:
    cert = _cert(work)
    entry = VaultEntry(
        serial=work["serial"],
        mailbox=request["mailbox"],
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pfx=_secret(p, work, "pfx_enc"),
        password=_secret(p, work, "password_enc").decode(),
    )
    ref = p.vault.store(entry=entry)
    back = p.vault.retrieve(ref=ref, reason=f"CertPortal verifies the stored copy of {entry.serial}")
    if back.pfx != entry.pfx or back.password != entry.password:
        raise RetryLater(f"{p.vault.name}: the stored copy of {entry.serial} differs from what was written")

    def record(conn: Any) -> None:
        record_issued(p, conn, request=request, work=work, certificate=cert, vault_ref=ref)

    # The certificate row, the wipe of the working secrets and the step advance
    # commit together: the vault copy has been read back and compared.
    return {"vault_ref": ref, "password_enc": None, "key_enc": None, "pfx_enc": None, IN_TRANSACTION: record}


def step_publish(p: Pipeline, request: Row, work: Row) -> Row:
    publish_certificate(p, serial=work["serial"], background_on_failure=True)
    return {}


def step_notify(p: Pipeline, request: Row, work: Row) -> Row:
    row = p.store.one("SELECT not_after FROM certificates WHERE serial = ?", (work["serial"],))
    tell(
        p,
        request,
        NotificationKind.CERTIFICATE_READY,
        f"Your S/MIME certificate for {request['mailbox']} is ready. IT keeps an encrypted copy of its key "
        "so your old encrypted mail can be recovered if you lose it.",
        serial=work["serial"],
        not_after=parse_iso(row["not_after"]) if row else None,
    )
    return {}


STEP_FUNCTIONS: dict[str, Step] = {
    "password": step_password,
    "key": step_key,
    "csr": step_csr,
    "order": step_order,
    "wait": step_wait,
    "fetch": step_fetch,
    "verify": step_verify,
    "bundle": step_bundle,
    "vault": step_vault,
    "publish": step_publish,
    "notify": step_notify,
}


def next_step(step: str) -> str:
    i = STEPS.index(step)
    return STEPS[i + 1] if i + 1 < len(STEPS) else "done"


def save_work(p: Pipeline, request_id: str, values: Row) -> None:
    with p.store.write() as conn:
        write_work(conn, request_id, values, iso(p.clock.now()))


def write_work(conn: Any, request_id: str, values: Row, now: str) -> None:
    conn.execute(
        "INSERT INTO work (request_id, updated_at) VALUES (?, ?) ON CONFLICT (request_id) DO NOTHING", (request_id, now)
    )
    if values:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        conn.execute(
            f"UPDATE work SET {sets}, updated_at = :updated_at WHERE request_id = :rid",  # noqa: S608
            {**values, "updated_at": now, "rid": request_id},
        )


def tell(p: Pipeline, request: Row, kind: NotificationKind, text: str, **extra: Any) -> None:
    """Notify about ``request`` (its owner, or approvers, as the notifier routes ``kind``). Raises RetryLater."""
    p.notifier.send(
        notification=Notification(
            kind=kind,
            text=text,
            mailbox=request["mailbox"],
            request_id=request["id"],
            slack_user_id=request["slack_user_id"],
            **extra,
        )
    )


def _cert(work: Row) -> x509.Certificate:
    return x509.load_pem_x509_certificate(work["cert_pem"].encode())


def _chain(work: Row) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(work["chain_pem"].encode()) if work["chain_pem"] else []


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
