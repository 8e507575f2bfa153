"""Publishes S/MIME certificates to LDAP / Active Directory user entries with ldap3.

The new certificate is added to ``userCertificate`` (``userCertificate;binary`` on
OpenLDAP) and only exact values the pipeline lists as removable are deleted, from
``userCertificate`` and from ``userSMIMECertificate`` (whose stale values would
otherwise win in Outlook). Additions and deletions go in one modify request, so a
renewal swaps certificates at once. The attribute is never replaced as a whole.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ldap3 import MODIFY_ADD, MODIFY_DELETE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from integrations.directory.certvalues import PublishPlan, plan_publish, warn_about_kept_smime
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.ports import Clock
from pipeline.settings import LdapSettings, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SMIME_ATTRIBUTE = "userSMIMECertificate"
# Result codes that may clear up by themselves: busy, unavailable, time/admin limit, other.
_TRANSIENT_RESULTS = {3, 11, 51, 52, 80}
_NO_SUCH_ATTRIBUTE, _INAPPROPRIATE_MATCHING, _NO_SUCH_OBJECT, _VALUE_EXISTS = 16, 18, 32, 20
_ATTEMPTS = 3  # re-read and re-plan when another writer changed the entry in between
_USER_REASON = "The directory refused to publish the certificate. IT has been told."


class _Conflict(Exception):
    """The entry changed between our read and our write."""


class LdapDirectory:
    """``DirectoryPublisher`` for an LDAP server. The constructor does no I/O."""

    name = "ldap"

    def __init__(self, settings: LdapSettings, *, bind_password: str) -> None:
        self._s = settings
        self._password = bind_password
        parts = urlsplit(settings.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ConfigError("directory.ldap.url must be an ldap:// or ldaps:// URL")
        self._host = parts.hostname
        self._ldaps = parts.scheme == "ldaps"
        if not settings.base_dn:
            raise ConfigError("directory.ldap.base_dn is required")
        if "{mailbox}" not in settings.user_filter:
            raise ConfigError("directory.ldap.user_filter must contain {mailbox}")
        self.certificate_attribute = "userCertificate;binary" if settings.binary_suffix else "userCertificate"
        # Cleared once a server shows it cannot delete single userSMIMECertificate values.
        self._smime_by_value = True
        if not self._ldaps and not settings.start_tls:
            log.warning(
                "directory.ldap: %s is plain ldap:// without StartTLS; use only in labs and tests", settings.url
            )

    # -- the port ---------------------------------------------------------------------------

    def check(self) -> list[str]:
        problems: list[str] = []
        try:
            with self._session() as conn:
                probe = self._s.user_filter.replace("{mailbox}", "*")
                conn.search(self._s.base_dn, probe, SUBTREE, attributes=["1.1"], size_limit=1)
                if conn.result["result"] == _NO_SUCH_OBJECT:
                    problems.append(f"directory.ldap.base_dn {self._s.base_dn} does not exist on {self._s.url}")
                elif not [r for r in conn.response or [] if r.get("type") == "searchResEntry"]:
                    problems.append(f"the user filter {probe} finds no entries under {self._s.base_dn}")
        except (RetryLater, PermanentFailure) as exc:
            problems.append(str(exc))
        return problems

    def publish(self, *, mailbox: str, certificate_der: bytes, removable_sha256: frozenset[str]) -> None:
        self._apply(mailbox, certificate_der, removable_sha256)

    def unpublish(self, *, mailbox: str, removable_sha256: frozenset[str]) -> None:
        self._apply(mailbox, None, removable_sha256)

    def certificates(self, *, mailbox: str) -> tuple[list[bytes], list[bytes]]:
        """The (userCertificate, userSMIMECertificate) values of a mailbox's entry. Raises like publish."""
        return self._with_session(lambda conn: self._read(conn, mailbox)[1:])

    # -- the work ---------------------------------------------------------------------------

    def _apply(self, mailbox: str, new_der: bytes | None, removable: frozenset[str]) -> None:
        def attempt(conn: Connection) -> None:
            for _ in range(_ATTEMPTS):
                dn, certificates, smime = self._read(conn, mailbox)
                plan = plan_publish(
                    mailbox=mailbox,
                    certificate_values=certificates,
                    smime_values=smime,
                    new_der=new_der,
                    removable_sha256=removable,
                )
                warn_about_kept_smime(
                    plan,
                    mailbox=mailbox,
                    publishing=new_der is not None,
                    smime="userSMIMECertificate",
                    certificate="userCertificate",
                )
                if not plan.changes_anything:
                    return
                try:
                    self._write(conn, mailbox, dn, plan, smime)
                    return
                except _Conflict:
                    continue
            raise RetryLater(f"ldap: the entry for {mailbox} kept changing while publishing")

        self._with_session(attempt)

    def _read(self, conn: Connection, mailbox: str) -> tuple[str, list[bytes], list[bytes]]:
        query = self._s.user_filter.replace("{mailbox}", escape_filter_chars(mailbox))
        conn.search(
            self._s.base_dn, query, SUBTREE, attributes=[self.certificate_attribute, SMIME_ATTRIBUTE], size_limit=2
        )
        if conn.result["result"] == _NO_SUCH_OBJECT:
            raise PermanentFailure(_USER_REASON, admin_detail=f"ldap: base DN {self._s.base_dn} does not exist")
        if conn.result["result"] not in (0, 4):  # 4: size limit, i.e. more than one match
            self._raise_for(conn, f"searching for {mailbox}")
        entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
        if not entries:
            raise NotFound(f"no directory user with mailbox {mailbox} (filter {query} under {self._s.base_dn})")
        if len(entries) > 1:
            raise PermanentFailure(
                f"More than one directory user has the mailbox {mailbox}; IT must fix the directory.",
                admin_detail=f"ldap: filter {query} matches {entries[0]['dn']} and {entries[1]['dn']}",
            )
        raw: dict[str, list[bytes]] = entries[0].get("raw_attributes") or {}
        return entries[0]["dn"], _values(raw, "userCertificate"), _values(raw, SMIME_ATTRIBUTE)

    def _write(self, conn: Connection, mailbox: str, dn: str, plan: PublishPlan, smime: list[bytes]) -> None:
        changes: dict[str, list[tuple[str, list[bytes]]]] = {}
        cert_ops: list[tuple[str, list[bytes]]] = []
        if plan.remove_certificates:
            cert_ops.append((MODIFY_DELETE, list(plan.remove_certificates)))
        if plan.add is not None:
            cert_ops.append((MODIFY_ADD, [plan.add]))
        if cert_ops:
            changes[self.certificate_attribute] = cert_ops
        if plan.remove_smime:
            changes[SMIME_ATTRIBUTE] = self._smime_removal(plan, smime)
        conn.modify(dn, changes)
        code = conn.result["result"]
        if code == _INAPPROPRIATE_MATCHING and plan.remove_smime and self._smime_by_value:
            # OpenLDAP defines no equality rule for userSMIMECertificate, so single
            # values cannot be named in a delete. Nothing was changed; redo the same
            # modify with the attribute rewritten from what was just read.
            self._smime_by_value = False
            changes[SMIME_ATTRIBUTE] = self._smime_removal(plan, smime)
            conn.modify(dn, changes)
            code = conn.result["result"]
        if code == 0:
            log.info(
                "published to %s: added %d, removed %d userCertificate and %d userSMIMECertificate value(s)",
                mailbox,
                1 if plan.add is not None else 0,
                len(plan.remove_certificates),
                len(plan.remove_smime),
            )
            return
        if code in (_NO_SUCH_ATTRIBUTE, _VALUE_EXISTS):
            raise _Conflict
        if code == _NO_SUCH_OBJECT:
            raise NotFound(f"the directory entry for {mailbox} ({dn}) disappeared while publishing")
        self._raise_for(conn, f"modifying {dn}")

    def _smime_removal(self, plan: PublishPlan, smime: list[bytes]) -> list[tuple[str, list[bytes]]]:
        if self._smime_by_value:
            return [(MODIFY_DELETE, list(plan.remove_smime))]
        # Delete-all and add-back in one atomic modify: the rest of the values stay.
        keep = [v for v in smime if v not in plan.remove_smime]
        return [(MODIFY_DELETE, []), (MODIFY_ADD, keep)] if keep else [(MODIFY_DELETE, [])]

    # -- connections and errors -----------------------------------------------------------------

    def _with_session(self, work: Callable[[Connection], T]) -> T:
        with self._session() as conn:
            return work(conn)

    def _session(self) -> _Session:
        return _Session(self)

    def _open(self) -> Connection:
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self._s.ca_file or None, sni=self._host)
        server = Server(
            self._s.url, use_ssl=self._ldaps, tls=tls, get_info=NONE, connect_timeout=self._s.timeout_seconds
        )
        conn = Connection(
            server,
            user=self._s.bind_dn or None,
            password=self._password or None,
            receive_timeout=max(1, math.ceil(self._s.timeout_seconds)),  # ldap3 needs whole seconds here
            auto_referrals=False,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if self._s.start_tls and not self._ldaps:
                conn.start_tls()
            if not conn.bind():
                code = conn.result["result"]
                if code in _TRANSIENT_RESULTS:
                    raise RetryLater(f"ldap: bind to {self._s.url} failed for now: {conn.result['description']}")
                raise PermanentFailure(
                    _USER_REASON,
                    admin_detail=f"ldap: bind as {self._s.bind_dn or 'anonymous'} to {self._s.url} was refused: "
                    f"{conn.result['description']} (check bind_dn and LDAP_BIND_PASSWORD)",
                )
        except BaseException:
            _unbind(conn)
            raise
        return conn

    def _raise_for(self, conn: Connection, what: str) -> None:
        result: dict[str, Any] = conn.result
        detail = (
            f"ldap: {what} failed: {result.get('description')} ({result.get('result')}) {result.get('message', '')}"
        )
        if result.get("result") in _TRANSIENT_RESULTS:
            raise RetryLater(detail.strip())
        raise PermanentFailure(_USER_REASON, admin_detail=detail.strip())

    def _translate(self, exc: lx.LDAPException) -> Exception:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, lx.LDAPCertificateError):
            return PermanentFailure(
                _USER_REASON,
                admin_detail=f"ldap: the TLS certificate of {self._s.url} is not trusted or does not match its name "
                "(set directory.ldap.ca_file to the issuing CA)",
            )
        if isinstance(exc, lx.LDAPStartTLSError) and "startTLS failed" in text:
            return PermanentFailure(_USER_REASON, admin_detail=f"ldap: {self._s.url} refused StartTLS: {text}")
        return RetryLater(f"ldap: cannot reach {self._s.url}: {type(exc).__name__}: {text[:200]}")


class _Session:
    """Opens, binds and always unbinds one connection; maps ldap3's exceptions to ours."""

    def __init__(self, directory: LdapDirectory) -> None:
        self._directory = directory
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        try:
            self._conn = self._directory._open()
        except lx.LDAPException as exc:
            raise self._directory._translate(exc) from None
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._conn is not None:
            _unbind(self._conn)
        if isinstance(exc, lx.LDAPException):
            raise self._directory._translate(exc) from None


def _unbind(conn: Connection) -> None:
    with contextlib.suppress(lx.LDAPException):
        conn.unbind()


def _values(raw: dict[str, list[bytes]], attribute: str) -> list[bytes]:
    """Values of ``attribute`` whatever options (``;binary``) and case the server returned it with."""
    wanted = attribute.lower()
    return [bytes(v) for key, values in raw.items() if key.split(";")[0].lower() == wanted for v in values]


def from_settings(settings: Settings, *, clock: Clock) -> LdapDirectory:
    return LdapDirectory(settings.directory.ldap, bind_password=settings.secrets.ldap_bind_password)
