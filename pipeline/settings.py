"""Typed settings, loaded once from a TOML file plus environment overrides and passed in.

Nothing below ``bot/`` reads the environment: ``load_settings`` is given the
environment mapping by the caller. Secrets never come from the TOML; they come from
environment variables or from files whose *paths* the TOML or environment names
(``*_FILE``). Unknown keys are refused so a typo is not silently ignored.

Environment overrides: ``CERTPORTAL__SECTION__KEY=value`` (double underscores
separate levels, e.g. ``CERTPORTAL__CA__BACKEND=digicert`` or
``CERTPORTAL__CA__LOCAL__VALIDITY_DAYS=90``). Values are parsed as TOML
literals where possible (numbers, booleans, lists), else taken as strings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings_parse import build, parse_env_value, set_path

KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384")
REVOCATION_REASONS = ("keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation", "unspecified")
# No look-alikes (0/O/o, 1/l/I, 5/S, 2/Z, 8/B, u/v) and nothing that needs a
# symbol keyboard on a phone.
DEFAULT_PASSWORD_ALPHABET = "abcdefghjkmnpqrstwxyzACDEFGHJKLMNPQRTWXY34679"  # noqa: S105 - an alphabet, not a password
MAX_VALIDITY_DAYS = 824


@dataclass
class ServiceSettings:
    log_level: str = "INFO"


@dataclass
class WebSettings:
    public_url: str = "http://127.0.0.1:8080"  # the base of every link: {public_url}/links/{token}
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080


@dataclass
class PolicySettings:
    allowed_domains: list[str] = field(default_factory=lambda: ["example.com"])
    pending_days: int = 7
    auto_approve_renewals: bool = True
    allow_guests: bool = False
    allow_bots: bool = False
    allow_deactivated: bool = False


@dataclass
class CryptoSettings:
    key_type: str = "rsa-3072"
    signature_hash: str = "sha256"
    password_length: int = 24
    password_alphabet: str = DEFAULT_PASSWORD_ALPHABET
    pkcs12_profile: str = "compatible"  # or "modern"
    # With a >= 112-bit random password the KDF adds no meaningful security but
    # its rounds hold the GIL; 2048 matches the MAC iteration count every PFX
    # reader accepts.
    pkcs12_kdf_rounds: int = 2048
    friendly_name: str = "{mailbox} S/MIME"

    @property
    def password_entropy_bits(self) -> float:
        return self.password_length * math.log2(len(set(self.password_alphabet)))


@dataclass
class WorkerSettings:
    threads: int = 2
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 20.0
    idle_poll_seconds: float = 0.5
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    publish_max_attempts: int = 12
    publish_alert_after: int = 3  # tell approvers after this many failed publish attempts


@dataclass
class LocalCASettings:
    pki_url: str = "http://pki.example.com/certportal"
    validity_days: int = 365
    issue_delay_seconds: float = 0.0
    lint_waivers: list[str] = field(default_factory=list)
    crl_validity_hours: int = 168
    organization: str = "CertPortal Embedded CA"


@dataclass
class DigiCertSettings:
    base_url: str = "https://www.digicert.com/services/v2"
    organization_id: int = 0
    product: str = "secure_email_mailbox"
    profile_type: str = "strict"
    usage: str = "dual_use"
    validity_years: int = 1
    skip_approval: bool = True
    order_lookup: bool = True
    timeout_seconds: float = 30.0
    api_key_file: str = ""


@dataclass
class SectigoSettings:
    base_url: str = "https://cert-manager.com/api"
    customer_uri: str = ""
    org_id: int = 0
    cert_type: int = 0
    term: int = 365
    order_lookup: bool = False
    timeout_seconds: float = 30.0
    password_file: str = ""


@dataclass
class CASettings:
    backend: str = "local"
    trust_anchors: list[str] = field(default_factory=list)
    poll_interval_seconds: float = 5.0
    pending_days: int = 7
    local: LocalCASettings = field(default_factory=LocalCASettings)
    digicert: DigiCertSettings = field(default_factory=DigiCertSettings)
    sectigo: SectigoSettings = field(default_factory=SectigoSettings)


@dataclass
class CyberArkSettings:
    base_url: str = ""
    auth_method: str = "CyberArk"
    safe: str = ""
    platform_id: str = ""
    ca_file: str = ""
    timeout_seconds: float = 30.0
    password_file: str = ""


@dataclass
class HashiCorpSettings:
    url: str = ""
    mount: str = "secret"
    path_template: str = "certportal/{mailbox}/{serial}"
    auth: str = "token"
    approle_mount: str = "approle"
    namespace: str = ""
    ca_file: str = ""
    timeout_seconds: float = 30.0


@dataclass
class VaultSettings:
    backend: str = "local"
    cyberark: CyberArkSettings = field(default_factory=CyberArkSettings)
    hashicorp: HashiCorpSettings = field(default_factory=HashiCorpSettings)


@dataclass
class LdapSettings:
    url: str = ""
    bind_dn: str = ""
    base_dn: str = ""
    user_filter: str = "(mail={mailbox})"
    binary_suffix: bool = True
    start_tls: bool = True
    ca_file: str = ""
    timeout_seconds: float = 10.0
    password_file: str = ""


@dataclass
class ExchangeOnlineSettings:
    tenant_id: str = ""
    client_id: str = ""
    certificate_path: str = ""
    base_url: str = "https://outlook.office365.com"
    authority_url: str = "https://login.microsoftonline.com"
    timeout_seconds: float = 30.0


@dataclass
class DirectorySettings:
    backend: str = "none"
    ldap: LdapSettings = field(default_factory=LdapSettings)
    exchange_online: ExchangeOnlineSettings = field(default_factory=ExchangeOnlineSettings)


@dataclass
class LinkSettings:
    ttl_minutes: int = 10
    failed_lookups_per_minute: int = 20


@dataclass
class SlackSettings:
    api_url: str = "https://slack.com/api/"
    approvers: list[str] = field(default_factory=list)  # Slack user ids
    approver_group: str = ""  # Slack user group id
    approvals_channel: str = ""


@dataclass
class LifecycleSettings:
    reminder_days: list[int] = field(default_factory=lambda: [30, 14, 7, 1])
    auto_renew_days: int | None = None


@dataclass
class SchedulerSettings:
    interval_seconds: int = 300
    lease_seconds: int = 600


@dataclass
class Secrets:
    """Secret values from the environment or files. Never printed: repr hides them."""

    master_keys: list[str] = field(default_factory=list, repr=False)
    slack_bot_token: str = field(default="", repr=False)
    slack_signing_secret: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    digicert_api_key: str = field(default="", repr=False)
    sectigo_login: str = field(default="", repr=False)
    sectigo_password: str = field(default="", repr=False)
    cyberark_username: str = field(default="", repr=False)
    cyberark_password: str = field(default="", repr=False)
    vault_token: str = field(default="", repr=False)
    vault_role_id: str = field(default="", repr=False)
    vault_secret_id: str = field(default="", repr=False)
    ldap_bind_password: str = field(default="", repr=False)


@dataclass
class Settings:
    data_dir: Path = Path("./var")
    service: ServiceSettings = field(default_factory=ServiceSettings)
    web: WebSettings = field(default_factory=WebSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ca: CASettings = field(default_factory=CASettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    links: LinkSettings = field(default_factory=LinkSettings)
    slack: SlackSettings = field(default_factory=SlackSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    secrets: Secrets = field(default_factory=Secrets, repr=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "certportal.db"


# Environment variable -> Secrets field. ``NAME_FILE`` reads the value from a file.
SECRET_ENV = {
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_APP_TOKEN": "slack_app_token",
    "DIGICERT_API_KEY": "digicert_api_key",
    "SECTIGO_LOGIN": "sectigo_login",
    "SECTIGO_PASSWORD": "sectigo_password",
    "CYBERARK_USERNAME": "cyberark_username",
    "CYBERARK_PASSWORD": "cyberark_password",
    "VAULT_TOKEN": "vault_token",
    "VAULT_ROLE_ID": "vault_role_id",
    "VAULT_SECRET_ID": "vault_secret_id",
    "LDAP_BIND_PASSWORD": "ldap_bind_password",
}
# TOML keys that name a file holding a secret (a path, not the secret itself).
SECRET_FILE_SETTINGS = {
    ("ca", "digicert", "api_key_file"): "digicert_api_key",
    ("ca", "sectigo", "password_file"): "sectigo_password",
    ("vault", "cyberark", "password_file"): "cyberark_password",
    ("directory", "ldap", "password_file"): "ldap_bind_password",
}
_SECRET_LOOKING_KEYS = ("password", "secret", "token", "api_key", "apikey", "private_key", "secret_id", "client_secret")


def _refuse_inline_secrets(raw: Mapping[str, Any], where: tuple[str, ...]) -> None:
    for key, value in raw.items():
        if isinstance(value, Mapping):
            _refuse_inline_secrets(value, (*where, key))
        elif key.lower() in _SECRET_LOOKING_KEYS or key.lower().endswith(("_password", "_token", "_secret")):
            name = ".".join((*where, key))
            raise ConfigError(
                f"{name}: secrets are not accepted in the config file; "
                "set them in the environment or name a file with a *_file setting"
            )


def load_settings(config_path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Build settings from an optional TOML file and the given environment.

    Raises ConfigError naming the offending setting.
    """
    raw: dict[str, Any] = {}
    path = config_path or environ.get("CERTPORTAL_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    _refuse_inline_secrets(raw, ())
    for name, value in environ.items():
        if name.startswith("CERTPORTAL__"):
            parts = [p.lower() for p in name[len("CERTPORTAL__") :].split("__")]
            set_path(raw, parts, parse_env_value(value))
    if "CERTPORTAL_DATA_DIR" in environ:
        raw["data_dir"] = environ["CERTPORTAL_DATA_DIR"]
    if "SLACK_API_URL" in environ:
        raw.setdefault("slack", {})["api_url"] = environ["SLACK_API_URL"]
    settings = build(Settings, raw, ())
    settings.secrets = _load_secrets(settings, environ)
    validate(settings)
    return settings


def _load_secrets(settings: Settings, environ: Mapping[str, str]) -> Secrets:
    secrets = Secrets()
    for (section, sub, key), target in SECRET_FILE_SETTINGS.items():
        file_path = getattr(getattr(getattr(settings, section), sub), key)
        if file_path:
            setattr(secrets, target, _read_secret_file(file_path, f"[{section}.{sub}] {key}"))
    for env_name, target in SECRET_ENV.items():
        if environ.get(env_name):
            setattr(secrets, target, environ[env_name].strip())
        elif environ.get(env_name + "_FILE"):
            setattr(secrets, target, _read_secret_file(environ[env_name + "_FILE"], env_name + "_FILE"))
    keys = environ.get("CERTPORTAL_MASTER_KEYS", "")
    if not keys and environ.get("CERTPORTAL_MASTER_KEYS_FILE"):
        keys = _read_secret_file(environ["CERTPORTAL_MASTER_KEYS_FILE"], "CERTPORTAL_MASTER_KEYS_FILE")
    secrets.master_keys = [k.strip() for k in keys.replace("\n", ",").split(",") if k.strip()]
    return secrets


def _read_secret_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def validate(s: Settings) -> None:
    """Refuse settings that cannot work or would weaken security. Raises ConfigError."""
    c = s.crypto
    if c.key_type not in KEY_TYPES:
        raise ConfigError(f"crypto.key_type must be one of {', '.join(KEY_TYPES)}")
    if c.signature_hash not in ("sha256", "sha384", "sha512"):
        raise ConfigError("crypto.signature_hash must be sha256, sha384 or sha512")
    if c.pkcs12_profile not in ("compatible", "modern"):
        raise ConfigError("crypto.pkcs12_profile must be compatible or modern")
    if len(set(c.password_alphabet)) < 10:
        raise ConfigError("crypto.password_alphabet needs at least 10 distinct characters")
    if c.password_entropy_bits < 112:
        raise ConfigError(
            f"crypto: a {c.password_length}-character password from {len(set(c.password_alphabet))} "
            f"symbols gives {c.password_entropy_bits:.0f} bits; S/MIME BR 6.1.2 needs at least 112"
        )
    try:
        c.friendly_name.format(mailbox="someone@example.com")
    except (KeyError, IndexError, ValueError):
        raise ConfigError("crypto.friendly_name may use only the placeholder {mailbox}") from None
    if not 1 <= c.pkcs12_kdf_rounds <= 1_000_000:
        raise ConfigError("crypto.pkcs12_kdf_rounds must be between 1 and 1000000")
    if not 1 <= s.ca.local.validity_days <= MAX_VALIDITY_DAYS:
        raise ConfigError(f"ca.local.validity_days must be between 1 and {MAX_VALIDITY_DAYS}")
    if not s.ca.local.pki_url.startswith("http://"):
        raise ConfigError("ca.local.pki_url must be an http:// URL (BR 7.1.2.3 asks for http CRL and AIA URLs)")
    for section, value, allowed in (
        ("ca.backend", s.ca.backend, ("local", "digicert", "sectigo")),
        ("vault.backend", s.vault.backend, ("local", "cyberark", "hashicorp")),
        ("directory.backend", s.directory.backend, ("none", "ldap", "exchange_online")),
        ("vault.hashicorp.auth", s.vault.hashicorp.auth, ("token", "approle")),
    ):
        if value not in allowed:
            raise ConfigError(f"{section} must be one of {', '.join(allowed)} (got {value!r})")
    if not 0 < s.worker.heartbeat_seconds < s.worker.lease_seconds:
        raise ConfigError("worker.heartbeat_seconds must be positive and shorter than worker.lease_seconds")
    if s.worker.threads < 1:
        raise ConfigError("worker.threads must be at least 1")
    if s.scheduler.interval_seconds < 1:
        raise ConfigError("scheduler.interval_seconds must be at least 1")
    if any(d <= 0 for d in s.lifecycle.reminder_days):
        raise ConfigError("lifecycle.reminder_days must be positive numbers of days")
    if s.links.ttl_minutes < 1:
        raise ConfigError("links.ttl_minutes must be at least 1")
    if not s.policy.allowed_domains:
        raise ConfigError("policy.allowed_domains must name at least one domain")
    s.policy.allowed_domains = [d.lower().lstrip("@") for d in s.policy.allowed_domains]
