"""S/MIME Baseline Requirements linting with pkilint (DigiCert's linter, as the BR recommend).

Used before issuance by the embedded CA (the to-be-signed certificate is linted)
and after issuance by ``verify`` for every CA. The certificate type comes from its
2.23.140.1.5.x.y policy OID.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography import x509
from pkilint import loader
from pkilint.cabf import smime
from pkilint.pkix import certificate

_BLOCKING = {"FATAL", "ERROR", "WARNING"}
_lock = threading.Lock()
_RECENT_MAX = 256
_recent: OrderedDict[bytes, LintResult] = OrderedDict()


@dataclass(frozen=True)
class Finding:
    severity: str  # FATAL | ERROR | WARNING | NOTICE | INFO | DEBUG
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} {self.code}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class LintResult:
    certificate_type: str  # e.g. MAILBOX-STRICT, or "" when the type is unknown
    findings: tuple[Finding, ...]

    def at_or_above(self, severities: set[str]) -> list[Finding]:
        return [f for f in self.findings if f.severity in severities]

    def blocking(self, waivers: frozenset[str] = frozenset()) -> list[Finding]:
        """WARNING or worse, less the codes an operator waived."""
        return [f for f in self.at_or_above(_BLOCKING) if f.code not in waivers]

    def errors(self, waivers: frozenset[str] = frozenset()) -> list[Finding]:
        return [f for f in self.at_or_above({"FATAL", "ERROR"}) if f.code not in waivers]


@cache
def _validator(level: Any, generation: Any) -> Any:
    return certificate.create_pkix_certificate_validator_container(
        smime.create_decoding_validators(),
        smime.create_subscriber_validators(level, generation),
    )


def lint_certificate(der: bytes) -> LintResult:
    """Lint one DER certificate as the S/MIME type its policy OID names.

    A certificate without an S/MIME BR policy OID gets a single ERROR finding.
    Results are remembered by the to-be-signed bytes: the embedded CA lints a
    dummy-signed copy before issuance, and verify then lints the real
    certificate, whose TBS is identical (findings never depend on the
    signature value), so the second lint is free.
    """
    key = hashlib.sha256(x509.load_der_x509_certificate(der).tbs_certificate_bytes).digest()
    with _lock:
        cached = _recent.get(key)
    if cached is not None:
        return cached
    result = _lint(der)
    with _lock:
        _recent[key] = result
        while len(_recent) > _RECENT_MAX:
            _recent.popitem(last=False)
    return result


def _lint(der: bytes) -> LintResult:
    cert = loader.load_der_certificate(der, "leaf")
    level_generation = smime.determine_validation_level_and_generation(cert)
    if level_generation is None:
        missing = Finding("ERROR", "certportal.no_smime_policy_oid", "no S/MIME BR policy OID (2.23.140.1.5.x.y)")
        return LintResult("", (missing,))
    level, generation = level_generation
    # pkilint's validator objects are not documented as thread-safe.
    with _lock:
        results = _validator(level, generation).validate(cert.root)
    findings = tuple(
        Finding(fd.finding.severity.name, fd.finding.code, fd.message or "")
        for r in results
        for fd in r.finding_descriptions
    )
    return LintResult(f"{level.name}-{generation.name}", findings)
