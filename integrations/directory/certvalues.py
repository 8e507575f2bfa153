"""Pure decisions shared by the directory publishers: which certificate values to add and remove.

A publisher adds the new certificate and deletes only exact values whose SHA-256
fingerprint the pipeline listed as removable (certificates this service issued that
are superseded, expired or revoked). Everything else stays, and when the values
that must stay already fill the 15 that Entra Connect syncs, publishing fails
without changing anything.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from pipeline.errors import PermanentFailure

log = logging.getLogger(__name__)

# Entra Connect stops exporting userCertificate / userSMIMECertificate above this.
MAX_CERTIFICATE_VALUES = 15
# rangeUpper of both attributes in the AD schema.
MAX_VALUE_BYTES = 32768


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER bytes as lowercase hex, the form the pipeline's certificate table keeps."""
    return hashlib.sha256(der).hexdigest()


def blob_certificates(blob: bytes) -> list[x509.Certificate] | None:
    """The certificates in a userSMIMECertificate value (PKCS#7 SignedData), or None if unreadable."""
    try:
        return pkcs7.load_der_pkcs7_certificates(blob)
    except ValueError:
        return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def blob_subject_fingerprints(blob: bytes) -> frozenset[str] | None:
    """Fingerprints of the end-entity certificates in a userSMIMECertificate blob.

    Outlook's "Publish to GAL" puts the issuing chain into the blob as well, so CA
    certificates are left out: the blob belongs to whoever issued its end-entity
    certificate(s). None when the blob cannot be read or holds no end-entity certificate.
    """
    certificates = blob_certificates(blob)
    if not certificates:
        return None
    leaves = frozenset(fingerprint(c.public_bytes(Encoding.DER)) for c in certificates if not _is_ca(c))
    return leaves or None


@dataclass(frozen=True)
class PublishPlan:
    """What to change on one mailbox. Values are exact bytes as read from the directory."""

    add: bytes | None
    remove_certificates: tuple[bytes, ...]
    remove_smime: tuple[bytes, ...]
    # userSMIMECertificate values left in place (another issuer's, or unreadable);
    # Outlook prefers them over userCertificate, so admins should hear about them.
    kept_smime: tuple[bytes, ...]

    @property
    def changes_anything(self) -> bool:
        return bool(self.add or self.remove_certificates or self.remove_smime)

    def kept_smime_fingerprints(self) -> list[str]:
        found: list[str] = []
        for blob in self.kept_smime:
            leaves = blob_subject_fingerprints(blob)
            found.extend(sorted(leaves) if leaves else [f"unreadable value {fingerprint(blob)[:16]}"])
        return found


def normalise(fingerprints: Iterable[str]) -> frozenset[str]:
    return frozenset(f.strip().lower().replace(":", "") for f in fingerprints)


def plan_publish(
    *,
    mailbox: str,
    certificate_values: Sequence[bytes],
    smime_values: Sequence[bytes],
    new_der: bytes | None,
    removable_sha256: Iterable[str],
    limit: int = MAX_CERTIFICATE_VALUES,
) -> PublishPlan:
    """Decide the changes for one mailbox; ``new_der`` None means remove only (unpublish).

    Raises PermanentFailure, naming the mailbox, when the new certificate cannot be
    added without exceeding ``limit`` values; nothing is removed in that case.
    """
    removable = set(normalise(removable_sha256))
    new_fp = fingerprint(new_der) if new_der is not None else None
    if new_fp is not None:
        # Never take away the certificate being published, whatever the caller listed.
        removable.discard(new_fp)
        if len(new_der or b"") > MAX_VALUE_BYTES:
            raise PermanentFailure(
                f"The certificate for {mailbox} is too large for the directory (over {MAX_VALUE_BYTES} bytes)."
            )
    present = {fingerprint(v) for v in certificate_values}
    remove_certificates = tuple(v for v in certificate_values if fingerprint(v) in removable)
    add = new_der if new_fp is not None and new_fp not in present else None
    after = len(certificate_values) - len(remove_certificates) + (1 if add is not None else 0)
    if add is not None and after > limit:
        kept = len(certificate_values) - len(remove_certificates)
        raise PermanentFailure(
            f"Could not publish the certificate for {mailbox}: the directory entry already holds {kept} "
            f"certificates that CertPortal may not remove (other issuers or still in use), and Entra Connect "
            f"syncs at most {limit}. Nothing was changed; an administrator must clean up that entry first.",
            admin_detail=(
                f"{mailbox}: {len(certificate_values)} userCertificate values, {len(remove_certificates)} removable, "
                f"adding one would make {after} > {limit}; nothing changed"
            ),
        )
    remove_smime: list[bytes] = []
    kept_smime: list[bytes] = []
    for blob in smime_values:
        leaves = blob_subject_fingerprints(blob)
        if leaves is not None and leaves <= removable:
            remove_smime.append(blob)
        elif leaves is None or new_fp not in leaves:
            kept_smime.append(blob)
    return PublishPlan(add, remove_certificates, tuple(remove_smime), tuple(kept_smime))


def warn_about_kept_smime(plan: PublishPlan, *, mailbox: str, publishing: bool, smime: str, certificate: str) -> None:
    """Log the S/MIME blobs a publish must leave alone: Outlook prefers them over the new certificate."""
    if plan.kept_smime and publishing:
        log.warning(
            "%s keeps %d %s value(s) CertPortal may not remove (%s); Outlook prefers them over %s",
            mailbox,
            len(plan.kept_smime),
            smime,
            ", ".join(plan.kept_smime_fingerprints()),
            certificate,
        )
