"""The portal's settings: every ``PORTAL_*`` environment variable is read here and nowhere else.

``Settings.from_env()`` validates everything at start-up and raises ``ConfigError`` listing each
problem with the name of the variable, so a misconfigured deployment stops before serving anything.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from limits import parse_many

from audit.note import ALG_COSIGNATURE_V1, NoteError, Verifier, key_name_ok

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
ENVIRONMENTS = ("development", "test", "production")
PORTAL_ROLES = ("patient", "clinician", "compliance", "admin")
# What the patient claim is matched against: the chart's MRN (through its blind index) or its portal id.
PATIENT_MATCHES = ("mrn", "id")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable portal; the message names each variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid portal configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _read_secret(value: str) -> str:
    """Secrets may be given inline or as a path to a file holding them (Docker/Kubernetes secrets). An absolute
    path that names no readable file is refused: a secret mount that went missing must not turn its own path
    into the secret."""
    if value and not value.lstrip().startswith("{") and Path(value).is_file():
        return Path(value).read_text().strip()
    if value.startswith("/"):
        raise ValueError(f"{value} names no readable file (a secret given as a path must exist)")
    return value


def _as_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _as_positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _as_non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or a positive whole number")
    return number


def _as_channel(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", value):
        raise ValueError("must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
    return value


def _as_positive_number(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a positive number")
    return number


def _as_rate_limit(value: str) -> str:
    """flask-limiter skips (does not enforce) a limit it cannot parse, so refuse it here."""
    parse_many(value)
    return value


def _as_role_map(value: str) -> dict[str, str]:
    mapping = json.loads(value)
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and v in PORTAL_ROLES for k, v in mapping.items()
    ):
        raise ValueError(f'expected a JSON object of claim values to one of {", ".join(PORTAL_ROLES)}')
    return mapping


def _as_patient_match(value: str) -> str:
    if value not in PATIENT_MATCHES:
        raise ValueError(f"expected one of {', '.join(PATIENT_MATCHES)}")
    return value


def _as_access_token_seconds(value: str) -> int:
    """SMART access tokens live an hour at most: a leaked one must not outlast that."""
    seconds = _as_positive_int(value)
    if seconds > 3600:
        raise ValueError("must be at most 3600 (an hour)")
    return seconds


def _as_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ValueError("expected an http(s) URL")
    return value.rstrip("/")


def _as_key_name(value: str) -> str:
    """A signed-note key name (c2sp.org/signed-note): the audit log's origin line and its key's name."""
    if not key_name_ok(value):
        raise ValueError("expected a note key name such as portal.example/audit: no spaces and no '+'")
    return value


def _as_witness_key(value: str) -> str:
    """A witness's cosigner verifier key, name+keyid+base64(0x04 ‖ Ed25519 public key) (c2sp.org/tlog-cosignature)."""
    try:
        verifier = Verifier.from_vkey(value.strip())
    except NoteError as exc:
        raise ValueError(str(exc)) from None
    if verifier.algorithm != ALG_COSIGNATURE_V1:
        raise ValueError("expected a witness's cosignature/v1 verifier key (type 0x04), as witness-keygen prints")
    return value.strip()


def _setting(env: str, default: Any = None, parse: Callable[[str], Any] | None = None, secret: bool = False):
    return field(default=default, metadata={"env": env, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    env: str = _setting("PORTAL_ENV", "development")
    secret_key: str = _setting("PORTAL_SECRET_KEY", "", secret=True)
    # The service URLs carry passwords, so they are secrets too: inline, or a path to a file holding them.
    database_url: str = _setting("PORTAL_DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'portal.db'}", secret=True)
    external_url: str = _setting("PORTAL_EXTERNAL_URL", "", _as_url)
    keyring: str = _setting("PORTAL_KEYRING", "", secret=True)
    audit_signing_key: str = _setting("PORTAL_AUDIT_SIGNING_KEY", "", secret=True)
    # A signed tree checkpoint of exactly each multiple of this many entries, which every verifier requires.
    audit_checkpoint_every: int = _setting("PORTAL_AUDIT_CHECKPOINT_EVERY", 100, _as_positive_int)
    # A signed tree checkpoint (C2SP signed note) at least this often while the log grows.
    audit_checkpoint_seconds: float = _setting("PORTAL_AUDIT_CHECKPOINT_SECONDS", 60, _as_positive_number)
    # The tree checkpoints' origin line and the name of the log's note key; default: <external host>/audit.
    audit_log_origin_setting: str = _setting("PORTAL_AUDIT_LOG_ORIGIN", "", _as_key_name)
    # The C2SP tlog-witness that cosigns the tree checkpoints (both or neither), and how long the log may
    # outgrow its last cosignature before /readyz reports the witness failed.
    audit_witness_url: str = _setting("PORTAL_AUDIT_WITNESS_URL", "", _as_url)
    # A public key, but given as a file like the secrets (Compose mounts it from secrets/witness_verifier_key).
    audit_witness_key: str = _setting("PORTAL_AUDIT_WITNESS_KEY", "", _as_witness_key, secret=True)
    audit_witness_max_lag_seconds: float = _setting("PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS", 600, _as_positive_number)
    # How long an audit append may wait for the append lock before the request fails closed (503).
    audit_lock_timeout_seconds: float = _setting("PORTAL_AUDIT_LOCK_TIMEOUT_SECONDS", 5, _as_positive_number)
    # A worker whose real audit appends fail reports not ready this long after the latest failure.
    audit_failure_not_ready_seconds: float = _setting("PORTAL_AUDIT_FAILURE_NOT_READY_SECONDS", 30,
                                                      _as_positive_number)
    oidc_issuer: str = _setting("PORTAL_OIDC_ISSUER", "", _as_url)
    oidc_client_id: str = _setting("PORTAL_OIDC_CLIENT_ID", "")
    oidc_client_secret: str = _setting("PORTAL_OIDC_CLIENT_SECRET", "", secret=True)
    oidc_scopes: str = _setting("PORTAL_OIDC_SCOPES", "openid profile email")
    oidc_roles_claim: str = _setting("PORTAL_OIDC_ROLES_CLAIM", "roles")
    oidc_role_map: dict = _setting("PORTAL_OIDC_ROLE_MAP", None, _as_role_map)
    oidc_patient_claim: str = _setting("PORTAL_OIDC_PATIENT_CLAIM", "patient_id")
    oidc_patient_match: str = _setting("PORTAL_OIDC_PATIENT_MATCH", "mrn", _as_patient_match)
    # Step-up: sensitive actions need a sign-in at most this old (and, when set, one of these acr values).
    oidc_step_up_max_age: int = _setting("PORTAL_OIDC_STEP_UP_MAX_AGE", 300, _as_positive_int)
    oidc_step_up_acr: str = _setting("PORTAL_OIDC_STEP_UP_ACR", "")
    step_up_window_seconds: int = _setting("PORTAL_STEP_UP_WINDOW_SECONDS", 300, _as_positive_int)
    dev_idp: bool = _setting("PORTAL_DEV_IDP", False, _as_bool)
    secure_cookies: bool = _setting("PORTAL_SECURE_COOKIES", None, _as_bool)
    session_idle_minutes: float = _setting("PORTAL_SESSION_IDLE_MINUTES", 15, _as_positive_number)
    session_max_hours: int = _setting("PORTAL_SESSION_MAX_HOURS", 12, _as_positive_int)
    login_rate_limit: str = _setting("PORTAL_LOGIN_RATE_LIMIT", "10 per minute", _as_rate_limit)
    # Each accounting of disclosures verifies the whole audit log: a per-user limit keeps workers free.
    report_rate_limit: str = _setting("PORTAL_REPORT_RATE_LIMIT", "10 per minute", _as_rate_limit)
    # A search lists names and dates of birth: how many distinct patients one user may be shown per hour.
    search_distinct_patients_per_hour: int = _setting("PORTAL_SEARCH_DISTINCT_PATIENTS_PER_HOUR", 50,
                                                      _as_positive_int)
    ratelimit_storage_url: str = _setting("PORTAL_RATELIMIT_STORAGE_URL", "memory://", secret=True)
    message_queue: str = _setting("PORTAL_MESSAGE_QUEUE", "", secret=True)
    # The Redis pub/sub channel the workers of one portal share; portals sharing a Redis need their own.
    message_queue_channel: str = _setting("PORTAL_MESSAGE_QUEUE_CHANNEL", "flask-socketio", _as_channel)
    message_max_bytes: int = _setting("PORTAL_MESSAGE_MAX_BYTES", 4096, _as_positive_int)
    message_rate_per_minute: int = _setting("PORTAL_MESSAGE_RATE_PER_MINUTE", 30, _as_positive_int)
    history_page_max: int = _setting("PORTAL_HISTORY_PAGE_MAX", 100, _as_positive_int)
    break_glass_minutes: int = _setting("PORTAL_BREAK_GLASS_MINUTES", 60, _as_positive_int)
    # Apps patients connect (SMART on FHIR): the RSA key that signs their ID tokens (published at the
    # JWKS; kept in the instance folder outside production when unset) and the token lifetimes.
    smart_signing_key: str = _setting("PORTAL_SMART_SIGNING_KEY", "", secret=True)
    smart_access_token_seconds: int = _setting("PORTAL_SMART_ACCESS_TOKEN_SECONDS", 3600, _as_access_token_seconds)
    smart_refresh_token_days: int = _setting("PORTAL_SMART_REFRESH_TOKEN_DAYS", 92, _as_positive_int)
    metrics_token: str = _setting("PORTAL_METRICS_TOKEN", "", secret=True)
    trusted_proxies: int = _setting("PORTAL_TRUSTED_PROXIES", 0, _as_non_negative_int)
    log_level: str = _setting("PORTAL_LOG_LEVEL", "INFO")

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return self.production

    @property
    def audit_log_origin(self) -> str:
        if self.audit_log_origin_setting:
            return self.audit_log_origin_setting
        return f"{urlparse(self.external_url).hostname or 'localhost'}/audit"

    @property
    def role_map(self) -> dict[str, str]:
        return self.oidc_role_map or {role: role for role in PORTAL_ROLES}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise ConfigError naming each bad variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in fields(cls):
            name, parse = spec.metadata["env"], spec.metadata["parse"]
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                if spec.metadata["secret"]:
                    raw = _read_secret(raw)
                values[spec.name] = parse(raw) if parse else raw
            except (ValueError, json.JSONDecodeError) as exc:
                problems.append(f"{name} is malformed: {exc}")
        if not environ.get("PORTAL_ENV"):
            # No silent default: an unset variable must not quietly switch the production checks off.
            problems.append(f"PORTAL_ENV is required: one of {', '.join(ENVIRONMENTS)}")
        settings = cls(**values)
        problems.extend(settings.problems())
        if problems:
            raise ConfigError(problems)
        return settings

    def problems(self) -> list[str]:
        """Cross-field checks: what is required, and what production refuses."""
        found: list[str] = []
        if self.env not in ENVIRONMENTS:
            found.append(f"PORTAL_ENV must be one of {', '.join(ENVIRONMENTS)} (got {self.env!r})")
        if len(self.secret_key) < 32:
            found.append("PORTAL_SECRET_KEY is missing or shorter than 32 characters")
        for name, value in (
            ("PORTAL_OIDC_ISSUER", self.oidc_issuer),
            ("PORTAL_OIDC_CLIENT_ID", self.oidc_client_id),
            ("PORTAL_OIDC_CLIENT_SECRET", self.oidc_client_secret),
            ("PORTAL_KEYRING", self.keyring),
            ("PORTAL_AUDIT_SIGNING_KEY", self.audit_signing_key),
        ):
            if not value:
                found.append(f"{name} is required")
        if self.audit_witness_url and not self.audit_witness_key:
            found.append("PORTAL_AUDIT_WITNESS_KEY is required with PORTAL_AUDIT_WITNESS_URL (the witness's verifier key)")
        if self.audit_witness_key and not self.audit_witness_url:
            found.append("PORTAL_AUDIT_WITNESS_URL is required with PORTAL_AUDIT_WITNESS_KEY")
        if "openid" not in self.oidc_scopes.split():
            found.append("PORTAL_OIDC_SCOPES must include openid")
        if self.dev_idp and self.oidc_issuer and urlparse(self.oidc_issuer).hostname not in LOOPBACK_HOSTS:
            found.append("PORTAL_DEV_IDP only runs on a loopback address (127.0.0.1 or localhost): its demo "
                         "passwords are public")
        if self.production:
            found.extend(self._production_problems())
        return found

    def _production_problems(self) -> list[str]:
        found = []
        if self.dev_idp:
            found.append("PORTAL_DEV_IDP must be off in production: the development provider accepts demo passwords")
        if not self.database_url.startswith("postgresql"):
            found.append("PORTAL_DATABASE_URL must point to PostgreSQL in production")
        if not self.oidc_issuer.startswith("https://"):
            found.append("PORTAL_OIDC_ISSUER must be an https:// URL in production")
        if not self.external_url.startswith("https://"):
            found.append("PORTAL_EXTERNAL_URL must be the portal's https:// address in production")
        if not self.cookies_secure:
            found.append("PORTAL_SECURE_COOKIES cannot be off in production")
        if self.ratelimit_storage_url.startswith("memory://"):
            found.append("PORTAL_RATELIMIT_STORAGE_URL must be shared storage (redis://...) in production, "
                         "or each worker keeps its own sign-in and message limits")
        if not self.metrics_token:
            found.append("PORTAL_METRICS_TOKEN is required in production (it guards /metrics)")
        if not self.smart_signing_key:
            found.append("PORTAL_SMART_SIGNING_KEY is required in production (it signs the ID tokens of connected apps; "
                         "every worker must use the same key)")
        return found

    def describe(self) -> dict[str, Any]:
        """Settings for display with every secret masked."""
        return {
            spec.metadata["env"]: ("***" if spec.metadata["secret"] and getattr(self, spec.name) else getattr(self, spec.name))
            for spec in fields(self)
        }
