"""Settings: TOML plus environment overrides, refused when unknown, insecure or unworkable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import DEFAULT_PASSWORD_ALPHABET, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certportal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_embedded_with_a_112_bit_password_policy():
    s = load_settings(None, {})
    assert (s.ca.backend, s.vault.backend, s.directory.backend) == ("local", "local", "none")
    assert s.crypto.key_type == "rsa-3072"
    assert s.crypto.pkcs12_profile == "compatible"
    assert s.crypto.signature_hash == "sha256"
    assert s.ca.local.validity_days == 365
    assert s.ca.local.pki_url == "http://pki.example.com/certportal"
    assert s.policy.allowed_domains == ["example.com"]
    assert s.data_dir == Path("./var")
    assert s.crypto.password_entropy_bits >= 112


def test_toml_values_apply_and_environment_overrides_win(tmp_path):
    config = write(
        tmp_path,
        """
        [crypto]
        key_type = "ec-p384"
        pkcs12_profile = "modern"
        [ca.local]
        validity_days = 200
        [policy]
        allowed_domains = ["Example.org", "@corp.example"]
        """,
    )
    s = load_settings(config, {"CERTPORTAL__CA__LOCAL__VALIDITY_DAYS": "90", "CERTPORTAL_DATA_DIR": str(tmp_path)})
    assert s.crypto.key_type == "ec-p384"
    assert s.crypto.pkcs12_profile == "modern"
    assert s.ca.local.validity_days == 90
    assert s.data_dir == tmp_path
    assert s.policy.allowed_domains == ["example.org", "corp.example"]


def test_config_path_from_environment_and_list_and_bool_overrides(tmp_path):
    config = write(tmp_path, "[worker]\nthreads = 3\n")
    s = load_settings(
        None,
        {
            "CERTPORTAL_CONFIG": str(config),
            "CERTPORTAL__POLICY__ALLOWED_DOMAINS": "a.example, b.example",
            "CERTPORTAL__POLICY__AUTO_APPROVE_RENEWALS": "false",
            "CERTPORTAL__LIFECYCLE__REMINDER_DAYS": "[20, 5]",
        },
    )
    assert s.worker.threads == 3
    assert s.policy.allowed_domains == ["a.example", "b.example"]
    assert s.policy.auto_approve_renewals is False
    assert s.lifecycle.reminder_days == [20, 5]


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ("typo_section = 1\n", {}, "typo_section"),
        ("[crypto]\nkeytype = 'rsa-2048'\n", {}, "crypto.keytype"),
        ("[ca.local]\nvalidity = 90\n", {}, "ca.local.validity"),
        ("", {"CERTPORTAL__WORKER__THREAD": "4"}, "worker.thread"),
    ],
)
def test_unknown_settings_are_refused_by_name(tmp_path, toml, env, named):
    with pytest.raises(ConfigError, match=rf"unknown setting {named}\b"):
        load_settings(write(tmp_path, toml), env)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[directory.ldap]\npassword = 'hunter2-inline'\n", "directory.ldap.password"),
        ("[ca.digicert]\napi_key = 'hunter2-inline'\n", "ca.digicert.api_key"),
        ("[slack]\nbot_token = 'hunter2-inline'\n", "slack.bot_token"),
        ("[slack]\nsigning_secret = 'hunter2-inline'\n", "slack.signing_secret"),
        ("[vault.hashicorp]\nsecret_id = 'hunter2-inline'\n", "vault.hashicorp.secret_id"),
    ],
)
def test_inline_secrets_are_refused_without_echoing_them(tmp_path, toml, named):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), {})
    message = str(caught.value)
    assert named in message
    assert "hunter2-inline" not in message


def test_master_keys_are_not_accepted_from_the_toml(tmp_path):
    with pytest.raises(ConfigError, match="secrets"):
        load_settings(write(tmp_path, "[secrets]\nmaster_keys = ['x']\n"), {})


def test_secrets_come_from_environment_and_named_files(tmp_path):
    ldap_password = tmp_path / "ldap.pw"
    ldap_password.write_text("from-a-file\n", encoding="utf-8")
    keys_file = tmp_path / "keys"
    keys_file.write_text("k1\nk2\n", encoding="utf-8")
    config = write(tmp_path, f"[directory.ldap]\npassword_file = '{ldap_password}'\n")
    s = load_settings(
        config,
        {
            "SLACK_BOT_TOKEN": "xoxb-env ",
            "VAULT_TOKEN_FILE": str(ldap_password),
            "CERTPORTAL_MASTER_KEYS_FILE": str(keys_file),
        },
    )
    assert s.secrets.ldap_bind_password == "from-a-file"
    assert s.secrets.slack_bot_token == "xoxb-env"
    assert s.secrets.vault_token == "from-a-file"
    assert s.secrets.master_keys == ["k1", "k2"]
    assert "from-a-file" not in repr(s)
    assert load_settings(None, {"CERTPORTAL_MASTER_KEYS": "a, b,,"}).secrets.master_keys == ["a", "b"]


def test_a_missing_secret_file_is_a_plain_error(tmp_path):
    with pytest.raises(ConfigError, match="LDAP_BIND_PASSWORD_FILE: cannot read"):
        load_settings(None, {"LDAP_BIND_PASSWORD_FILE": str(tmp_path / "absent")})


@pytest.mark.parametrize(
    ("length", "alphabet", "accepted"),
    [
        (24, DEFAULT_PASSWORD_ALPHABET, True),
        (21, DEFAULT_PASSWORD_ALPHABET, True),  # 21 * log2(45) = 115.3 bits
        (20, DEFAULT_PASSWORD_ALPHABET, False),  # 109.8 bits
        (16, DEFAULT_PASSWORD_ALPHABET, False),
        (19, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", True),  # 113.1 bits
        (18, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", False),  # 107.2 bits
        (34, "0123456789", True),  # 112.9 bits
        (33, "0123456789", False),  # 109.6 bits
        (60, "0123456789" * 9, True),  # repeats add nothing: 60 * log2(10)
        (200, "abcdefghi", False),  # fewer than 10 distinct symbols
    ],
)
def test_password_policy_below_112_bits_is_refused(length, alphabet, accepted):
    env = {"CERTPORTAL__CRYPTO__PASSWORD_LENGTH": str(length), "CERTPORTAL__CRYPTO__PASSWORD_ALPHABET": alphabet}
    bits = length * math.log2(len(set(alphabet)))
    if accepted:
        assert load_settings(None, env).crypto.password_entropy_bits == pytest.approx(bits)
    else:
        with pytest.raises(ConfigError, match="crypto"):
            load_settings(None, env)


@pytest.mark.parametrize(("days", "accepted"), [(1, True), (365, True), (824, True), (825, False), (0, False)])
def test_validity_is_capped_at_824_days(days, accepted):
    env = {"CERTPORTAL__CA__LOCAL__VALIDITY_DAYS": str(days)}
    if accepted:
        assert load_settings(None, env).ca.local.validity_days == days
    else:
        with pytest.raises(ConfigError, match="validity_days"):
            load_settings(None, env)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://pki.corp.example/smime", True),
        ("https://pki.corp.example/smime", False),
        ("ldap://pki.corp.example/smime", False),
        ("pki.corp.example", False),
    ],
)
def test_pki_url_must_be_http(tmp_path, url, accepted):
    config = write(tmp_path, f"[ca.local]\npki_url = '{url}'\n")
    if accepted:
        assert load_settings(config, {}).ca.local.pki_url == url
    else:
        with pytest.raises(ConfigError, match="pki_url must be an http://"):
            load_settings(config, {})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CERTPORTAL__CRYPTO__KEY_TYPE", "rsa-1024"),
        ("CERTPORTAL__CRYPTO__PKCS12_PROFILE", "rc2-40"),
        ("CERTPORTAL__CRYPTO__SIGNATURE_HASH", "sha1"),
        ("CERTPORTAL__CA__BACKEND", "letsencrypt"),
        ("CERTPORTAL__WORKER__THREADS", "0"),
        ("CERTPORTAL__WORKER__THREADS", "many"),
        ("CERTPORTAL__POLICY__ALLOWED_DOMAINS", "[]"),
    ],
)
def test_unworkable_values_are_refused(name, value):
    with pytest.raises(ConfigError):
        load_settings(None, {name: value})


def test_a_missing_or_broken_config_file_is_a_plain_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[crypto\n"), {})


def test_weak_password_policy_stops_the_command_line_at_start_up(run_cli):
    result = run_cli("list", env={"CERTPORTAL__CRYPTO__PASSWORD_LENGTH": "16"})
    assert result.returncode != 0
    assert "112" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_friendly_name_template_that_cannot_be_filled_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="friendly_name"):
        load_settings(None, {"CERTPORTAL__CRYPTO__FRIENDLY_NAME": "{name} S/MIME"})
