"""A throwaway OpenLDAP slapd on a loopback port for directory tests.

The server gets its own configuration (core, cosine and inetorgperson schemas, one
mdb database for dc=example,dc=com), a self-made TLS certificate for StartTLS and
LDAPS, and is seeded with a few inetOrgPerson users. It runs in the foreground as a
child of the test process and is stopped by its PID. Tests skip with a reason when
the slapd binary is missing; CI installs the Debian ``slapd`` package.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import BASE, MODIFY_REPLACE, Connection, Server

from tests.support.dircerts import make_ca

SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/local/libexec/openldap")
BASE_DN = "dc=example,dc=com"
PEOPLE_DN = f"ou=people,{BASE_DN}"
ADMIN_DN = f"cn=admin,{BASE_DN}"
SEED_USERS = ("alice", "bob", "carol")


def find_slapd() -> str | None:
    return shutil.which("slapd") or next((p for p in ("/usr/sbin/slapd",) if Path(p).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_tls(workdir: Path) -> Path:
    """Server certificate for 127.0.0.1 issued by a throwaway CA; returns the CA file path."""
    ca = make_ca("slapd test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    (workdir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_file = workdir / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    return ca_file


class Slapd:
    """One slapd process; ``stop``/``start`` keep the port and the data (for outage tests)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.ldaps_port = _free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.ca_file = _write_tls(workdir)
        self._process: subprocess.Popen[bytes] | None = None
        (workdir / "db").mkdir(exist_ok=True)
        self._write_config()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def _write_config(self) -> None:
        schema_dir = next((d for d in SCHEMA_DIRS if Path(d, "core.schema").exists()), None)
        if schema_dir is None:
            pytest.skip("slapd schemas (core.schema) not found")
        module_dir = next((d for d in MODULE_DIRS if list(Path(d).glob("back_mdb*"))), None)
        lines = [f"include {schema_dir}/{name}.schema" for name in ("core", "cosine", "inetorgperson")]
        lines += [f"pidfile {self.workdir}/slapd.pid", f"argsfile {self.workdir}/slapd.args"]
        lines += [
            f"TLSCertificateFile {self.workdir}/server.pem",
            f"TLSCertificateKeyFile {self.workdir}/server.key",
            f"TLSCACertificateFile {self.ca_file}",
        ]
        if module_dir:
            lines += [f"modulepath {module_dir}", "moduleload back_mdb"]
        lines += [
            "database mdb",
            f'suffix "{BASE_DN}"',
            f'rootdn "{ADMIN_DN}"',
            f"rootpw {self.admin_password}",
            f"directory {self.workdir}/db",
            "maxsize 10485760",
        ]
        (self.workdir / "slapd.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> None:
        listen = f"{self.url}/ {self.ldaps_url}/"
        log = (self.workdir / "slapd.log").open("ab")
        # -d keeps slapd in the foreground, so the process handle is the server.
        self._process = subprocess.Popen(
            [self.binary, "-f", str(self.workdir / "slapd.conf"), "-h", listen, "-d", "0"],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = (self.workdir / "slapd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"slapd exited with {self._process.returncode}: {output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not start listening within 10 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def admin(self) -> Connection:
        return Connection(Server(self.url), ADMIN_DN, self.admin_password, auto_bind=True)

    def seed(self) -> None:
        with self.admin() as conn:
            conn.add(BASE_DN, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
            conn.add(PEOPLE_DN, ["organizationalUnit"], {"ou": "people"})
            for name in SEED_USERS:
                self._add_user(conn, name, f"{name}@example.com")

    @staticmethod
    def _add_user(conn: Connection, uid: str, mailbox: str) -> str:
        dn = f"uid={uid},{PEOPLE_DN}"
        attributes = {"uid": uid, "cn": uid, "sn": uid, "mail": mailbox}
        if not conn.add(dn, ["inetOrgPerson"], attributes):
            raise RuntimeError(f"could not add {dn}: {conn.result}")
        return dn

    def add_user(self, mailbox: str | None = None) -> tuple[str, str]:
        """A fresh inetOrgPerson; returns (mailbox, dn)."""
        uid = "u" + uuid.uuid4().hex[:12]
        mailbox = mailbox or f"{uid}@example.com"
        with self.admin() as conn:
            return mailbox, self._add_user(conn, uid, mailbox)

    def values(self, dn: str) -> tuple[list[bytes], list[bytes]]:
        """(userCertificate values, userSMIMECertificate values) of an entry, read as admin."""
        with self.admin() as conn:
            conn.search(dn, "(objectClass=*)", BASE, attributes=["userCertificate;binary", "userSMIMECertificate"])
            raw = conn.response[0]["raw_attributes"]
        return list(raw.get("userCertificate;binary", [])), list(raw.get("userSMIMECertificate", []))

    def set_values(self, dn: str, certificates: list[bytes], smime: tuple[bytes, ...] = ()) -> None:
        """Put values in place directly, e.g. another CA's certificates."""
        changes: dict[str, list[tuple[str, list[bytes]]]] = {"userCertificate;binary": [(MODIFY_REPLACE, certificates)]}
        if smime:
            changes["userSMIMECertificate"] = [(MODIFY_REPLACE, list(smime))]
        with self.admin() as conn:
            if not conn.modify(dn, changes):
                raise RuntimeError(f"could not set values on {dn}: {conn.result}")


def _new_server(workdir: Path) -> Slapd:
    binary = find_slapd()
    if binary is None:
        pytest.skip("OpenLDAP slapd is not installed (Debian package: slapd)")
    server = Slapd(binary, workdir)
    server.start()
    server.seed()
    return server


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """One slapd for the whole session; tests use their own users via ``ldap_user``."""
    server = _new_server(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of the test's own, for tests that stop and restart the server."""
    server = _new_server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_user(slapd_server: Slapd) -> tuple[str, str]:
    """(mailbox, dn) of a user nobody else's test touches."""
    return slapd_server.add_user()
