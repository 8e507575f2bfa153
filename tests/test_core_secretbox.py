"""The secret box: the first master key encrypts, every key decrypts, a wrong key fails cleanly."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.errors import CertPortalError, ConfigError
from pipeline.secretbox import DecryptionError, SecretBox, new_key, read_key_file, resolve_master_keys

SECRET = b"correct horse battery staple"


def test_round_trip_and_no_plaintext_in_the_ciphertext():
    box = SecretBox([new_key()])
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert box.decrypt(token) == SECRET
    assert box.encrypt(SECRET) != token  # fresh IV each time


def test_rotation_old_key_decrypts_first_key_encrypts():
    old, new = new_key(), new_key()
    before = SecretBox([old]).encrypt(SECRET)
    both = SecretBox([new, old])
    assert both.decrypt(before) == SECRET
    after = both.encrypt(SECRET)
    assert SecretBox([new]).decrypt(after) == SECRET
    with pytest.raises(DecryptionError):
        SecretBox([old]).decrypt(after)
    rotated = both.rotate(before)
    assert SecretBox([new]).decrypt(rotated) == SECRET


def test_wrong_key_fails_cleanly():
    token = SecretBox([new_key()]).encrypt(SECRET)
    with pytest.raises(DecryptionError) as caught:
        SecretBox([new_key()]).decrypt(token)
    assert isinstance(caught.value, CertPortalError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert SECRET.decode() not in str(caught.value)
    with pytest.raises(DecryptionError):
        SecretBox([new_key()]).rotate(token)
    with pytest.raises(DecryptionError):
        SecretBox([new_key()]).decrypt(token[:-4] + b"AAAA")


@pytest.mark.parametrize("keys", [[], ["not-a-fernet-key"], ["c2hvcnQ="]])
def test_missing_or_malformed_master_keys_are_a_config_error(keys):
    with pytest.raises(ConfigError) as caught:
        SecretBox(keys)
    for key in keys:
        assert key not in str(caught.value)


def test_audit_mac_keys_differ_per_master_key_and_the_first_signs():
    a, b = new_key(), new_key()
    box = SecretBox([a, b])
    keys = box.audit_keys()
    assert len(set(keys.values())) == 2
    assert box.signing_audit_key_id == next(iter(SecretBox([a]).audit_keys()))
    assert all(a.encode() not in k and b.encode() not in k for k in keys.values())


def test_first_run_generates_a_private_key_file_and_reuses_it(tmp_path):
    data_dir = tmp_path / "data"
    old_umask = os.umask(0)  # the file must be private by itself, not by the caller's umask
    try:
        keys, from_file = resolve_master_keys([], data_dir)
    finally:
        os.umask(old_umask)
    path = data_dir / "master.keys"
    assert from_file and len(keys) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert resolve_master_keys([], data_dir) == (keys, True)
    assert read_key_file(path) == keys
    SecretBox(keys).decrypt(SecretBox(keys).encrypt(SECRET))


def test_configured_keys_win_and_no_key_file_is_written(tmp_path):
    key = new_key()
    assert resolve_master_keys([key], tmp_path / "data") == ([key], False)
    assert not (tmp_path / "data" / "master.keys").exists()
