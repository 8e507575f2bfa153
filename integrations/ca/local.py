"""The embedded CA (backend ``local``): a root and an issuing CA kept in the data dir.

It behaves as a slow CA can: ``submit`` records an order that becomes issuable
after ``[ca.local] issue_delay_seconds`` (immediate by default) and ``poll``
resolves it. Orders are keyed by idempotency key, so submitting twice with the
same key returns the same order. Every to-be-issued certificate is linted with
pkilint first (signed by a throwaway key, as BR 4.3.1.2 describes) and refused on
any finding of WARNING or above that the operator has not waived by code.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from integrations.ca import local_profile as profile
from integrations.ca.local_state import CAState
from pipeline.clock import iso, parse_iso
from pipeline.crypto.keys import key_type_of
from pipeline.errors import NotFound, PermanentFailure, PolicyError, RetryLater
from pipeline.lint import lint_certificate
from pipeline.ports import Clock, IssuedCertificate, Order, OrderStatus, RevocationReason, Subscriber
from pipeline.secretbox import SecretBox
from pipeline.settings import LocalCASettings, Settings

_REASON_FLAGS = {
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
}


class LocalCA:
    name = "local"

    def __init__(
        self,
        settings: LocalCASettings,
        *,
        data_dir: Path,
        box: SecretBox,
        clock: Clock,
        extra_anchors: list[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.state = CAState(data_dir / "ca", box=box, clock=clock, organization=settings.organization)
        self.clock = clock
        self._extra_anchors = extra_anchors or []
        self._waivers = frozenset(settings.lint_waivers)
        # Signs the to-be-linted copy of each certificate; never signs anything real.
        self._lint_key = ec.generate_private_key(ec.SECP384R1())

    # -- port ---------------------------------------------------------------
    def check(self) -> list[str]:
        try:
            self.state.ensure()
        except Exception as exc:  # doctor reports, it does not crash
            return [f"embedded CA: cannot open its keys in {self.state.folder}: {exc}"]
        return []

    def describe(self) -> list[str]:
        lines = [f"embedded CA: certificates name {self.settings.pki_url}/crl and {self.settings.pki_url}/issuer.crt"]
        for code in sorted(self._waivers):
            lines.append(f"embedded CA: lint finding waived by [ca.local] lint_waivers: {code}")
        return lines

    def submit(self, *, csr_pem: bytes, subscriber: Subscriber, idempotency_key: str) -> Order:
        csr = _load_csr(csr_pem, subscriber.mailbox)
        ready_at = self.clock.now() + timedelta(seconds=self.settings.issue_delay_seconds)
        row = self.state.create_order(
            order_id="lca-" + secrets.token_hex(8),
            idempotency_key=idempotency_key,
            mailbox=subscriber.mailbox,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
            ready_at=iso(ready_at),
        )
        return self.poll(order_id=row["id"])

    def find_order(self, *, idempotency_key: str) -> Order | None:
        row = self.state.order_by_key(idempotency_key)
        return self.poll(order_id=row["id"]) if row else None

    def poll(self, *, order_id: str) -> Order:
        row = self.state.order(order_id)
        if row is None:
            raise PermanentFailure(
                "The certificate order was lost.", admin_detail=f"no order {order_id} at the embedded CA"
            )
        if row["status"] == "pending" and parse_iso(row["ready_at"]) <= self.clock.now():
            self._issue(row)
            row = self.state.order(order_id)
            assert row is not None
        return Order(
            order_id=row["id"],
            status=OrderStatus(row["status"]),
            detail=row["detail"],
            user_message="The certificate could not be issued; IT has the details."
            if row["status"] == "rejected"
            else "",
        )

    def fetch(self, *, order_id: str) -> IssuedCertificate:
        row = self.state.order(order_id)
        if row is not None and row["status"] == "pending":
            raise RetryLater(f"embedded CA order {order_id} is not issued yet")
        if row is None or row["status"] != "issued":
            raise PermanentFailure("The certificate is not available.", admin_detail=f"order {order_id} is not issued")
        issuing, root = self.state.chain()
        return IssuedCertificate(row["cert_pem"].encode(), (_pem(issuing), _pem(root)))

    def revoke(self, *, order_id: str, serial: str, reason: RevocationReason) -> None:
        row = self.state.order(order_id)
        if row is None or row["serial"] != serial:
            raise NotFound(f"the embedded CA did not issue serial {serial}")
        self.state.revoke(serial, reason.value)
        self.refresh_crl(force=True)

    def cancel(self, *, order_id: str) -> None:
        self.state.cancel(order_id)

    def trust_anchors(self) -> list[bytes]:
        return [_pem(self.state.chain()[1]), *self._extra_anchors]

    # -- the CA's own duties ------------------------------------------------
    def issuing_certificate(self) -> x509.Certificate:
        return self.state.chain()[0]

    def crl(self) -> x509.CertificateRevocationList:
        """The current signed CRL, refreshed when past half its validity."""
        return self.refresh_crl(force=False)

    def refresh_crl(self, *, force: bool) -> x509.CertificateRevocationList:
        now = self.clock.now()
        current = self.state.load_crl()
        if current is not None and not force:
            next_update = current.next_update_utc
            half = (next_update - current.last_update_utc) / 2 if next_update else None
            if next_update is not None and half is not None and now < next_update - half:
                return current
        issuing, key = self.state.issuing()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing.subject)
            .last_update(now)
            .next_update(now + timedelta(hours=self.settings.crl_validity_hours))
            .add_extension(x509.CRLNumber(self.state.next_crl_number()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                ),
                critical=False,
            )
        )
        for serial, revoked_at, reason in self.state.revocations():
            entry = (
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(parse_iso(revoked_at))
            )
            if reason in _REASON_FLAGS:  # "unspecified" omits the reasonCode (BR 7.2.2)
                entry = entry.add_extension(x509.CRLReason(_REASON_FLAGS[RevocationReason(reason)]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(key, profile.CA_HASH)
        self.state.save_crl(crl)
        return crl

    def _issue(self, row: dict[str, str]) -> None:
        csr = x509.load_pem_x509_csr(row["csr_pem"].encode())
        issuing, key = self.state.issuing()
        now = self.clock.now().replace(microsecond=0)
        builder = profile.leaf_builder(
            mailbox=row["mailbox"],
            public_key=csr.public_key(),  # type: ignore[arg-type]
            issuer=issuing,
            serial=profile.random_serial(),
            not_before=now,
            days=self.settings.validity_days,
            pki_url=self.settings.pki_url,
        )
        tbs = builder.sign(self._lint_key, profile.CA_HASH)
        result = lint_certificate(tbs.public_bytes(serialization.Encoding.DER))
        blocking = result.blocking(self._waivers)
        if blocking:
            self.state.reject(row["id"], "pre-issuance lint refused: " + "; ".join(map(str, blocking)))
            return
        waived = sorted({f.code for f in result.at_or_above({"FATAL", "ERROR", "WARNING"})} & self._waivers)
        cert = builder.sign(key, profile.CA_HASH)
        self.state.mark_issued(
            row["id"],
            cert_pem=_pem(cert).decode(),
            serial=format(cert.serial_number, "x"),
            detail=("waived lint findings: " + ", ".join(waived)) if waived else "",
        )


def _load_csr(csr_pem: bytes, mailbox: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PermanentFailure("The certificate request was malformed.", admin_detail="CSR does not parse") from None
    if not csr.is_signature_valid:
        raise PermanentFailure("The certificate request was malformed.", admin_detail="CSR signature is invalid")
    try:
        key_type_of(csr.public_key())
    except PolicyError:
        raise PermanentFailure(
            "The key type is not allowed.", admin_detail="CSR key is not RSA 2048-4096 or P-256/P-384"
        ) from None
    if not mailbox or "@" not in mailbox:
        raise PermanentFailure("The mailbox is not valid.", admin_detail=f"bad mailbox {mailbox!r}")
    return csr


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def from_settings(settings: Settings, *, clock: Clock, box: SecretBox) -> LocalCA:
    anchors = [Path(p).read_bytes() for p in settings.ca.trust_anchors]
    return LocalCA(settings.ca.local, data_dir=settings.data_dir, box=box, clock=clock, extra_anchors=anchors)
