"""Settings.from_env refuses environments that do not describe a safe, runnable portal, naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audit import SigningKey
from audit.note import ALG_COSIGNATURE_V1, NoteSigner
from portal.config import PROJECT_ROOT, ConfigError, Settings

SECRET_KEY = "s" * 48
DEVELOPMENT = {
    "PORTAL_ENV": "development",
    "PORTAL_SECRET_KEY": SECRET_KEY,
    "PORTAL_OIDC_ISSUER": "http://127.0.0.1:5000/devidp",
    "PORTAL_OIDC_CLIENT_ID": "portal",
    "PORTAL_OIDC_CLIENT_SECRET": "client-secret-value",
    "PORTAL_KEYRING": "keyring-inline",
    "PORTAL_AUDIT_SIGNING_KEY": "signing-key-inline",
    "PORTAL_DEV_IDP": "1",
}
PRODUCTION = {
    **DEVELOPMENT,
    "PORTAL_ENV": "production",
    "PORTAL_DEV_IDP": "0",
    "PORTAL_DATABASE_URL": "postgresql+psycopg2://portal@db.internal/portal",
    "PORTAL_OIDC_ISSUER": "https://login.clinic.example/realms/portal",
    "PORTAL_EXTERNAL_URL": "https://portal.clinic.example",
    "PORTAL_METRICS_TOKEN": "metrics-token-value",
    "PORTAL_RATELIMIT_STORAGE_URL": "redis://redis.internal:6379/1",
    "PORTAL_SMART_SIGNING_KEY": "smart-signing-key-inline",
}


def refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    return info.value


def without(environ: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in names}


def test_valid_environments_are_accepted() -> None:
    dev = Settings.from_env(DEVELOPMENT)
    assert dev.dev_idp is True and dev.production is False
    prod = Settings.from_env(PRODUCTION)
    assert prod.production and prod.cookies_secure and not prod.dev_idp
    assert prod.oidc_issuer == "https://login.clinic.example/realms/portal"


def test_values_are_parsed() -> None:
    settings = Settings.from_env({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "0.05", "PORTAL_DEV_IDP": "off",
                                  "PORTAL_OIDC_ISSUER": "http://127.0.0.1:9000/", "PORTAL_SESSION_MAX_HOURS": "8",
                                  "PORTAL_OIDC_ROLE_MAP": '{"doctor": "clinician"}', "PORTAL_TRUSTED_PROXIES": "1",
                                  "PORTAL_LOGIN_RATE_LIMIT": "3 per minute;20/hour"})
    assert settings.session_idle_minutes == 0.05
    assert settings.dev_idp is False
    assert settings.oidc_issuer == "http://127.0.0.1:9000"  # trailing slash removed
    assert settings.session_max_hours == 8 and settings.trusted_proxies == 1
    assert settings.role_map == {"doctor": "clinician"}
    assert settings.login_rate_limit == "3 per minute;20/hour"


def test_the_patient_claim_is_matched_against_the_mrn_unless_told_otherwise() -> None:
    assert Settings.from_env(DEVELOPMENT).oidc_patient_match == "mrn"
    assert Settings.from_env({**DEVELOPMENT, "PORTAL_OIDC_PATIENT_MATCH": "id"}).oidc_patient_match == "id"


@pytest.mark.parametrize("environ, variable", [
    pytest.param({**PRODUCTION, "PORTAL_DEV_IDP": "1"}, "PORTAL_DEV_IDP", id="production-dev-idp"),
    pytest.param(without(DEVELOPMENT, "PORTAL_SECRET_KEY"), "PORTAL_SECRET_KEY", id="missing-secret-key"),
    pytest.param({**DEVELOPMENT, "PORTAL_SECRET_KEY": "too-short"}, "PORTAL_SECRET_KEY", id="short-secret-key"),
    pytest.param(without(DEVELOPMENT, "PORTAL_OIDC_ISSUER"), "PORTAL_OIDC_ISSUER", id="missing-issuer"),
    pytest.param(without(DEVELOPMENT, "PORTAL_OIDC_CLIENT_ID"), "PORTAL_OIDC_CLIENT_ID", id="missing-client-id"),
    pytest.param(without(DEVELOPMENT, "PORTAL_OIDC_CLIENT_SECRET"), "PORTAL_OIDC_CLIENT_SECRET",
                 id="missing-client-secret"),
    pytest.param(without(DEVELOPMENT, "PORTAL_KEYRING"), "PORTAL_KEYRING", id="missing-keyring"),
    pytest.param(without(DEVELOPMENT, "PORTAL_AUDIT_SIGNING_KEY"), "PORTAL_AUDIT_SIGNING_KEY", id="missing-audit-key"),
    pytest.param({**DEVELOPMENT, "PORTAL_ENV": "staging"}, "PORTAL_ENV", id="unknown-env"),
    pytest.param(without(DEVELOPMENT, "PORTAL_ENV"), "PORTAL_ENV", id="env-unset"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ISSUER": "http://portal.clinic.example/devidp"}, "PORTAL_DEV_IDP",
                 id="dev-idp-off-loopback"),
    pytest.param(without(PRODUCTION, "PORTAL_RATELIMIT_STORAGE_URL"), "PORTAL_RATELIMIT_STORAGE_URL",
                 id="production-per-worker-rate-limits"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_SCOPES": "profile email"}, "PORTAL_OIDC_SCOPES", id="scopes-no-openid"),
    # malformed integers and numbers
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_MAX_HOURS": "twelve"}, "PORTAL_SESSION_MAX_HOURS", id="int-word"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_MAX_HOURS": "1.5"}, "PORTAL_SESSION_MAX_HOURS", id="int-fraction"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_MAX_HOURS": "0"}, "PORTAL_SESSION_MAX_HOURS", id="int-zero"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_CHECKPOINT_EVERY": "-5"}, "PORTAL_AUDIT_CHECKPOINT_EVERY",
                 id="int-negative"),
    pytest.param({**DEVELOPMENT, "PORTAL_MESSAGE_MAX_BYTES": "4k"}, "PORTAL_MESSAGE_MAX_BYTES", id="int-suffix"),
    pytest.param({**DEVELOPMENT, "PORTAL_TRUSTED_PROXIES": "one"}, "PORTAL_TRUSTED_PROXIES", id="proxies-word"),
    pytest.param({**DEVELOPMENT, "PORTAL_TRUSTED_PROXIES": "-1"}, "PORTAL_TRUSTED_PROXIES", id="proxies-negative"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "soon"}, "PORTAL_SESSION_IDLE_MINUTES",
                 id="number-word"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "0"}, "PORTAL_SESSION_IDLE_MINUTES", id="number-zero"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_STEP_UP_MAX_AGE": "0"}, "PORTAL_OIDC_STEP_UP_MAX_AGE", id="step-up-zero"),
    pytest.param({**DEVELOPMENT, "PORTAL_STEP_UP_WINDOW_SECONDS": "a while"}, "PORTAL_STEP_UP_WINDOW_SECONDS",
                 id="step-up-window-words"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "nan"}, "PORTAL_SESSION_IDLE_MINUTES", id="number-nan"),
    pytest.param({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "inf"}, "PORTAL_SESSION_IDLE_MINUTES", id="number-inf"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_CHECKPOINT_SECONDS": "0"}, "PORTAL_AUDIT_CHECKPOINT_SECONDS",
                 id="tree-checkpoint-seconds-zero"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_LOG_ORIGIN": "portal example/audit"}, "PORTAL_AUDIT_LOG_ORIGIN",
                 id="origin-with-space"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_LOG_ORIGIN": "portal+example/audit"}, "PORTAL_AUDIT_LOG_ORIGIN",
                 id="origin-with-plus"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_WITNESS_URL": "http://127.0.0.1:5071"}, "PORTAL_AUDIT_WITNESS_KEY",
                 id="witness-url-without-key"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_WITNESS_URL": "http://127.0.0.1:5071",
                  "PORTAL_AUDIT_WITNESS_KEY": "witness.test/w1+01020304+AQ=="}, "PORTAL_AUDIT_WITNESS_KEY",
                 id="witness-key-malformed"),
    pytest.param({**DEVELOPMENT, "PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS": "-1"}, "PORTAL_AUDIT_WITNESS_MAX_LAG_SECONDS",
                 id="witness-lag-negative"),
    # malformed booleans
    pytest.param({**DEVELOPMENT, "PORTAL_DEV_IDP": "maybe"}, "PORTAL_DEV_IDP", id="bool-maybe"),
    pytest.param({**DEVELOPMENT, "PORTAL_SECURE_COOKIES": "2"}, "PORTAL_SECURE_COOKIES", id="bool-two"),
    # malformed URLs
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ISSUER": "login.clinic.example"}, "PORTAL_OIDC_ISSUER", id="url-no-scheme"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ISSUER": "ftp://login.clinic.example"}, "PORTAL_OIDC_ISSUER",
                 id="url-ftp"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ISSUER": "https://"}, "PORTAL_OIDC_ISSUER", id="url-no-host"),
    pytest.param({**DEVELOPMENT, "PORTAL_EXTERNAL_URL": "portal.clinic.example:443"}, "PORTAL_EXTERNAL_URL",
                 id="external-url-no-scheme"),
    # a rate limit flask-limiter cannot parse would silently not be enforced
    pytest.param({**DEVELOPMENT, "PORTAL_LOGIN_RATE_LIMIT": "lots"}, "PORTAL_LOGIN_RATE_LIMIT", id="rate-limit-word"),
    pytest.param({**DEVELOPMENT, "PORTAL_LOGIN_RATE_LIMIT": "3 per fortnight"}, "PORTAL_LOGIN_RATE_LIMIT",
                 id="rate-limit-unit"),
    # malformed JSON role map
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ROLE_MAP": "{doctor: clinician}"}, "PORTAL_OIDC_ROLE_MAP", id="map-json"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_ROLE_MAP": '{"doctor": "superuser"}'}, "PORTAL_OIDC_ROLE_MAP",
                 id="map-unknown-role"),
    # what the patient claim is matched against
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_PATIENT_MATCH": "uuid"}, "PORTAL_OIDC_PATIENT_MATCH", id="match-unknown"),
    pytest.param({**DEVELOPMENT, "PORTAL_OIDC_PATIENT_MATCH": "MRN"}, "PORTAL_OIDC_PATIENT_MATCH", id="match-case"),
    # production refusals
    pytest.param({**PRODUCTION, "PORTAL_DATABASE_URL": "sqlite:////var/lib/portal/portal.db"}, "PORTAL_DATABASE_URL",
                 id="production-sqlite"),
    pytest.param(without(PRODUCTION, "PORTAL_DATABASE_URL"), "PORTAL_DATABASE_URL", id="production-default-sqlite"),
    pytest.param({**PRODUCTION, "PORTAL_OIDC_ISSUER": "http://login.clinic.example"}, "PORTAL_OIDC_ISSUER",
                 id="production-http-issuer"),
    pytest.param({**PRODUCTION, "PORTAL_EXTERNAL_URL": "http://portal.clinic.example"}, "PORTAL_EXTERNAL_URL",
                 id="production-http-external-url"),
    pytest.param(without(PRODUCTION, "PORTAL_EXTERNAL_URL"), "PORTAL_EXTERNAL_URL", id="production-no-external-url"),
    pytest.param({**PRODUCTION, "PORTAL_SECURE_COOKIES": "0"}, "PORTAL_SECURE_COOKIES", id="production-insecure-cookies"),
    pytest.param(without(PRODUCTION, "PORTAL_METRICS_TOKEN"), "PORTAL_METRICS_TOKEN", id="production-no-metrics-token"),
    # apps patients connect: one ID-token key for every worker, access tokens of an hour at most
    pytest.param(without(PRODUCTION, "PORTAL_SMART_SIGNING_KEY"), "PORTAL_SMART_SIGNING_KEY",
                 id="production-no-smart-signing-key"),
    pytest.param({**DEVELOPMENT, "PORTAL_SMART_ACCESS_TOKEN_SECONDS": "3601"}, "PORTAL_SMART_ACCESS_TOKEN_SECONDS",
                 id="smart-access-token-over-an-hour"),
    pytest.param({**DEVELOPMENT, "PORTAL_SMART_REFRESH_TOKEN_DAYS": "0"}, "PORTAL_SMART_REFRESH_TOKEN_DAYS",
                 id="smart-refresh-token-days-zero"),
])
def test_refused_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    error = refused(environ)
    assert error.problems and all(problem.startswith(variable) for problem in error.problems), error.problems
    assert variable in str(error)


def test_every_problem_is_reported_at_once() -> None:
    error = refused({"PORTAL_ENV": "production", "PORTAL_DEV_IDP": "1", "PORTAL_SESSION_MAX_HOURS": "x"})
    named = {problem.split()[0] for problem in error.problems}
    assert {"PORTAL_SECRET_KEY", "PORTAL_OIDC_ISSUER", "PORTAL_DEV_IDP", "PORTAL_DATABASE_URL",
            "PORTAL_SESSION_MAX_HOURS", "PORTAL_METRICS_TOKEN"} <= named


def test_refusals_do_not_echo_secret_values() -> None:
    error = refused({**DEVELOPMENT, "PORTAL_SECRET_KEY": "hunter2-short", "PORTAL_SESSION_MAX_HOURS": "x"})
    assert "hunter2" not in str(error)
    described = Settings.from_env(DEVELOPMENT).describe()
    assert described["PORTAL_SECRET_KEY"] == "***" and described["PORTAL_OIDC_CLIENT_SECRET"] == "***"
    assert SECRET_KEY not in repr(described)


def test_secrets_may_be_read_from_files(tmp_path) -> None:
    secret_file = tmp_path / "secret-key"
    secret_file.write_text(SECRET_KEY + "\n")
    settings = Settings.from_env({**DEVELOPMENT, "PORTAL_SECRET_KEY": str(secret_file)})
    assert settings.secret_key == SECRET_KEY


def test_a_secret_file_that_is_missing_is_refused_not_taken_as_the_secret(tmp_path) -> None:
    """A secret mount that went missing: its path must not become the metrics token or the session key."""
    missing = str(tmp_path / "not-mounted")
    problems = refused({**PRODUCTION, "PORTAL_METRICS_TOKEN": missing, "PORTAL_SECRET_KEY": "/run/secrets/gone"})
    assert any(p.startswith("PORTAL_METRICS_TOKEN is malformed") and "names no readable file" in p
               for p in problems.problems)
    assert any(p.startswith("PORTAL_SECRET_KEY is malformed") for p in problems.problems)


def test_service_urls_with_passwords_may_be_read_from_files_and_are_masked(tmp_path) -> None:
    """Compose and Kubernetes mount secrets as files: the URLs that carry passwords can be given that way too."""
    urls = {"PORTAL_DATABASE_URL": "postgresql+psycopg2://portal_app:db-pass-value@db:5432/portal",
            "PORTAL_MESSAGE_QUEUE": "redis://:redis-pass-value@redis:6379/0",
            "PORTAL_RATELIMIT_STORAGE_URL": "redis://:redis-pass-value@redis:6379/1"}
    files = {}
    for name, url in urls.items():
        files[name] = tmp_path / name.lower()
        files[name].write_text(url + "\n")
    settings = Settings.from_env({**PRODUCTION, **{name: str(path) for name, path in files.items()}})
    assert (settings.database_url, settings.message_queue, settings.ratelimit_storage_url) == tuple(urls.values())
    described = settings.describe()
    assert all(described[name] == "***" for name in urls)
    assert "pass-value" not in repr(described)


def _run_portal(environ: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "run.py", "--port", "1"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_run_py_refuses_to_start_with_a_bad_environment() -> None:
    result = _run_portal({**PRODUCTION, "PORTAL_DEV_IDP": "1", "PORTAL_DATABASE_URL": "sqlite:///x.db"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid portal configuration" in result.stderr
    assert "PORTAL_DEV_IDP must be off in production" in result.stderr
    assert "PORTAL_DATABASE_URL must point to PostgreSQL" in result.stderr
    assert "serving" not in result.stdout


def test_run_py_refuses_a_malformed_value() -> None:
    result = _run_portal({**DEVELOPMENT, "PORTAL_SESSION_IDLE_MINUTES": "fifteen"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "PORTAL_SESSION_IDLE_MINUTES is malformed" in result.stderr


def test_the_audit_log_origin_defaults_to_the_external_host_and_may_be_set() -> None:
    assert Settings.from_env({**DEVELOPMENT, "PORTAL_EXTERNAL_URL": "https://portal.clinic.example:8443"}
                             ).audit_log_origin == "portal.clinic.example/audit"
    assert Settings.from_env({**DEVELOPMENT, "PORTAL_AUDIT_LOG_ORIGIN": "clinic.example/log"}
                             ).audit_log_origin == "clinic.example/log"


def test_a_witness_key_must_be_a_cosigner_key_not_a_logs_key() -> None:
    log_key = NoteSigner("clinic.example/log", SigningKey.generate()).vkey()
    witness_key = NoteSigner("witness.example/w1", SigningKey.generate(), ALG_COSIGNATURE_V1).vkey()
    witnessed = {**DEVELOPMENT, "PORTAL_AUDIT_WITNESS_URL": "http://127.0.0.1:5071"}
    assert Settings.from_env({**witnessed, "PORTAL_AUDIT_WITNESS_KEY": witness_key}).audit_witness_key == witness_key
    with pytest.raises(ConfigError, match="PORTAL_AUDIT_WITNESS_KEY is malformed: expected a witness"):
        Settings.from_env({**witnessed, "PORTAL_AUDIT_WITNESS_KEY": log_key})
