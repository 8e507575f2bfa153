"""Local secret encryption under a rotatable master key set (Fernet keys: the first encrypts, all decrypt).

Keys come from ``CERTPORTAL_MASTER_KEYS`` or, on a first run without it, from a key
file generated in the data dir with mode 0600. The audit chain's MAC key is
derived from each master key with HKDF, so rewriting the database alone cannot
forge the chain.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.errors import CertPortalError, ConfigError

KEY_FILE_NAME = "master.keys"


class DecryptionError(CertPortalError):
    """Ciphertext does not open under any configured master key."""


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError("no master key configured")
        try:
            self._fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError):
            raise ConfigError(
                "CERTPORTAL_MASTER_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes; create one with `certportal keys new`)"
            ) from None
        self._multi = MultiFernet(self._fernets)
        self._raw = [k.encode() for k in keys]

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._multi.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._multi.decrypt(token)
        except InvalidToken:
            raise DecryptionError("a stored secret does not open with any configured master key") from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt under the first key (a no-op in effect if it already is)."""
        try:
            return self._multi.rotate(token)
        except InvalidToken:
            raise DecryptionError("a stored secret does not open with any configured master key") from None

    def audit_keys(self) -> dict[str, bytes]:
        """MAC keys for the audit chain by key id; the first one signs new entries."""
        out: dict[str, bytes] = {}
        for raw in self._raw:
            mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"certportal audit chain v1").derive(
                raw
            )
            out[hashlib.sha256(mac_key).hexdigest()[:16]] = mac_key
        return out

    @property
    def signing_audit_key_id(self) -> str:
        return next(iter(self.audit_keys()))


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def read_key_file(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_key_file(path: Path, keys: list[str]) -> None:
    """Write keys atomically with mode 0600 (never readable by others, even briefly)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(keys) + "\n")
    os.replace(tmp, path)


def resolve_master_keys(configured: list[str], data_dir: Path) -> tuple[list[str], bool]:
    """Return the key set and whether it comes from the key file (creating one on first run)."""
    if configured:
        return configured, False
    path = key_file(data_dir)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_key_file(path, [new_key()])
    return read_key_file(path), True
