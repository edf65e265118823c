"""compose.yaml, read as Compose reads it and cross-checked against what it refers to.

No Docker engine runs on these machines, so this is what can be known without one: every PORTAL_*
variable is a real setting and, with the secret files deploy/compose/make-secrets.sh writes, makes a
production configuration the portal accepts; no secret is inline; services, health checks, networks,
volumes and secrets refer to each other consistently, the migration runs before the workers; nginx uses
deploy/nginx.conf itself, with a worker list that names the Compose workers.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from audit import load_signing_key, load_verify_key
from audit.note import NoteSigner
from audit.witness import load_witness_key
from portal.config import Settings
from portal.crypto import Keyring
from tests.support.environment import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
SETTINGS = {spec.metadata["env"]: spec for spec in fields(Settings)}
SECRET_SETTINGS = {name for name, spec in SETTINGS.items() if spec.metadata["secret"]}
# Files the operator brings: the provider's client secret and the TLS certificate for the public name.
PROVIDED_SECRETS = {"oidc_client_secret", "tls_certificate", "tls_private_key"}
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
SECRETS_DIR = "/run/secrets/"


def _example_env() -> dict[str, str]:
    lines = (ROOT / "deploy/compose/example.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _interpolate(value: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        assert match.group(1) in variables, f"${{{match.group(1)}}} is not in deploy/compose/example.env"
        return variables[match.group(1)]
    return INTERPOLATION.sub(substitute, value)


def _secret_names(service: dict) -> dict[str, str]:
    """The secrets a service mounts: source name -> path inside the container."""
    mounted = {}
    for entry in service.get("secrets", []):
        source, target = (entry, entry) if isinstance(entry, str) else (entry["source"], entry.get("target", entry["source"]))
        mounted[source] = target if target.startswith("/") else SECRETS_DIR + target
    return mounted


def _mounts(service: dict) -> dict[str, str]:
    """source -> target of a service's volumes (short syntax: SOURCE:TARGET[:MODE])."""
    return dict(mount.split(":")[:2] for mount in service.get("volumes", []))


def _workers() -> dict[str, dict]:
    return {name: service for name, service in SERVICES.items() if "run.py" in service.get("command", [])}


def _port(command: list[str]) -> str:
    return command[command.index("--port") + 1]


@pytest.fixture(scope="module")
def generated_secrets(tmp_path_factory) -> Path:
    """What deploy/compose/make-secrets.sh writes, plus the files the operator brings."""
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy/compose/make-secrets.sh"), str(folder)], check=True, capture_output=True)
    (folder / "oidc_client_secret").write_text("client-secret-from-the-provider\n")
    return folder


def test_every_portal_variable_is_a_setting():
    for name, service in SERVICES.items():
        unknown = [key for key in service.get("environment", {}) if key.startswith("PORTAL_") and key not in SETTINGS]
        assert not unknown, f"{name} sets {unknown}, which portal/config.py does not read"
    assert all(key in SETTINGS for key in _example_env() if key.startswith("PORTAL_") and key != "PORTAL_IMAGE_TAG")


def test_no_secret_value_is_inline():
    """Every secret setting points at a mounted secret file; other services take *_FILE paths the same way."""
    declared = COMPOSE["secrets"]
    for name, service in SERVICES.items():
        mounted = _secret_names(service)
        for key, value in service.get("environment", {}).items():
            value = str(value)
            if key in SECRET_SETTINGS:
                source = value.removeprefix(SECRETS_DIR)
                assert value.startswith(SECRETS_DIR) and source in mounted, f"{name}: {key} is not a mounted secret file"
            elif re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", key):
                assert key.endswith("_FILE") and value.startswith(SECRETS_DIR), f"{name}: {key}={value!r} is inline"
            assert not re.search(r"://[^/@\s]*:[^/@\s]+@", value), f"{name}: {key} carries a password inline"
        assert set(mounted) <= set(declared), f"{name} mounts undeclared secrets {set(mounted) - set(declared)}"
    for source, spec in declared.items():
        assert spec["file"] == f"./secrets/{source}", f"secret {source} must live under ./secrets/"
        assert any(source in _secret_names(service) for service in SERVICES.values()), f"secret {source} is unused"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/secrets/" in ignored and "/.env" in ignored


def test_the_secrets_script_writes_every_declared_secret(generated_secrets):
    written = {path.name for path in generated_secrets.iterdir()}
    missing = set(COMPOSE["secrets"]) - written - PROVIDED_SECRETS
    assert not missing, f"make-secrets.sh does not write {missing}"
    assert written - set(COMPOSE["secrets"]) <= {"redis_password", "audit_public_key.pem", "oidc_client_secret"}
    Keyring.load(str(generated_secrets / "keyring"))
    signing_key = load_signing_key(str(generated_secrets / "audit_signing_key"))
    verify_key = load_verify_key(str(generated_secrets / "audit_public_key.pem"))
    message = b"checkpoint"
    assert verify_key.verify(message, signing_key.sign(message))


def test_the_secrets_script_never_replaces_a_file(generated_secrets):
    before = {path.name: path.read_bytes() for path in generated_secrets.iterdir()}
    subprocess.run(["sh", str(ROOT / "deploy/compose/make-secrets.sh"), str(generated_secrets)], check=True,
                   capture_output=True)
    assert {path.name: path.read_bytes() for path in generated_secrets.iterdir()} == before


@pytest.mark.parametrize("service", ["portal-1", "portal-2", "migrate"])
def test_each_portal_service_has_a_valid_production_configuration(service, generated_secrets):
    """The environment Compose gives the container, with the secret files mounted, passes Settings.from_env."""
    spec = SERVICES[service]
    mounted = _secret_names(spec)
    environ = {}
    for key, value in spec["environment"].items():
        value = _interpolate(str(value), _example_env())
        if value.startswith(SECRETS_DIR):
            (source,) = [name for name, target in mounted.items() if target == value]
            value = str(generated_secrets / source)
        environ[key] = value
    settings = Settings.from_env(environ)
    assert settings.production and settings.database_url.startswith("postgresql+psycopg2://")
    assert settings.message_queue.startswith("redis://") and settings.ratelimit_storage_url.startswith("redis://")
    role = "portal_owner" if service == "migrate" else "portal_app"
    assert f"://{role}:" in settings.database_url, f"{service} must connect as {role}"


def test_the_migration_runs_once_as_the_owner_before_every_worker():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["flask", "--app", "portal", "init-db"] and migrate["restart"] == "no"
    assert migrate["environment"]["PORTAL_DATABASE_URL"] == SECRETS_DIR + "database_url_owner"
    workers = _workers()
    assert len(workers) >= 2
    for name, worker in workers.items():
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert worker["environment"]["PORTAL_DATABASE_URL"] == SECRETS_DIR + "database_url_app", name
        assert "database_url_owner" not in _secret_names(worker), f"{name} must not hold the owner's credentials"
        assert worker["image"] == migrate["image"] and worker["build"] == migrate["build"] == "."
    init = (ROOT / "deploy/compose/initdb/10-portal-roles.sh").read_text()
    assert "CREATE ROLE portal_owner" in init and "CREATE ROLE portal_app" in init


def test_dependencies_and_health_checks_agree():
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy, which has no check"
            elif condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} must be one-shot"
            else:
                assert condition == "service_started", condition
    for name, worker in _workers().items():
        probe = " ".join(worker["healthcheck"]["test"])
        assert f"http://127.0.0.1:{_port(worker['command'])}/readyz" in probe, name
    assert "/healthz" in " ".join(SERVICES["nginx"]["healthcheck"]["test"])
    assert "127.0.0.1:5000/healthz" in (ROOT / "Dockerfile").read_text()
    assert set(SERVICES["nginx"]["depends_on"]) == set(_workers())


def test_networks_volumes_and_published_ports():
    networks, volumes = COMPOSE["networks"], COMPOSE["volumes"]
    internal = {name for name, spec in networks.items() if (spec or {}).get("internal")}
    for name, service in SERVICES.items():
        assert set(service.get("networks", [])) <= set(networks), name
        assert set(service["networks"]) & internal, f"{name} is not on the internal network"
        for source in _mounts(service):
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
    assert [name for name, service in SERVICES.items() if service.get("ports")] == ["nginx"]
    for name in ("db", "redis", "migrate"):
        assert set(SERVICES[name]["networks"]) <= internal, f"{name} must not be reachable from outside"
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["db"]["volumes"]
    assert SERVICES["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == SECRETS_DIR + "postgres_password"


def test_nginx_uses_deploy_nginx_conf_with_the_compose_workers():
    nginx = SERVICES["nginx"]
    mounts = _mounts(nginx)
    assert mounts["./deploy/nginx.conf"].startswith("/etc/nginx/conf.d/"), "compose must mount deploy/nginx.conf itself"
    conf = (ROOT / "deploy/nginx.conf").read_text()
    (include,) = re.findall(r"^\s*include\s+(\S+);", conf, re.M)
    assert mounts["./deploy/compose/nginx-workers.conf"] == include
    listed = re.findall(r"^server\s+(\S+)\s", (ROOT / "deploy/compose/nginx-workers.conf").read_text(), re.M)
    assert sorted(listed) == sorted(f"{name}:{_port(w['command'])}" for name, w in _workers().items())
    tls = {secret["source"]: secret["target"] for secret in nginx["secrets"]}
    assert re.search(rf"ssl_certificate\s+{re.escape(tls['tls_certificate'])};", conf)
    assert re.search(rf"ssl_certificate_key\s+{re.escape(tls['tls_private_key'])};", conf)


def test_prometheus_scrapes_every_worker_with_the_token():
    compose_scrape = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())["scrape_configs"][0]
    targets = [target for group in compose_scrape["static_configs"] for target in group["targets"]]
    assert sorted(targets) == sorted(f"{name}:{_port(w['command'])}" for name, w in _workers().items())
    assert compose_scrape["authorization"]["credentials_file"] == SECRETS_DIR + "metrics_token"
    assert "metrics_token" in _secret_names(SERVICES["prometheus"])
    mounts = _mounts(SERVICES["prometheus"])
    assert mounts["./deploy/compose/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # The systemd layout: one scrape target per worker port nginx balances.
    host_scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]
    host_targets = [target for group in host_scrape["static_configs"] for target in group["targets"]]
    upstream = re.findall(r"^server\s+(\S+)\s", (ROOT / "deploy/nginx-workers.conf").read_text(), re.M)
    assert sorted(host_targets) == sorted(upstream)
    assert all(group["labels"]["worker"] for group in host_scrape["static_configs"] + compose_scrape["static_configs"])


def test_the_witness_runs_apart_from_the_portal_and_its_database(generated_secrets):
    """Its own container, user and volume; no database credential or signing key; the workers pin its key."""
    witness = SERVICES["witness"]
    assert witness["user"].split(":")[0] == "10002" and "USER 10001" in (ROOT / "Dockerfile").read_text()
    assert "install -d -o witness -g witness -m 700 /var/lib/witness" in (ROOT / "Dockerfile").read_text()
    assert _mounts(witness) == {"witness": "/var/lib/witness"} and "witness" in COMPOSE["volumes"]
    command = " ".join(witness["command"])
    assert "python -m audit witness --key /run/secrets/witness_key --state /var/lib/witness/" in command
    assert set(_secret_names(witness)) == {"witness_key", "audit_public_key.pem"}
    assert set(witness["networks"]) <= {name for name, spec in COMPOSE["networks"].items() if (spec or {}).get("internal")}
    port = _port(command.split())
    for name, worker in {**_workers(), "migrate": SERVICES["migrate"]}.items():
        assert worker["environment"]["PORTAL_AUDIT_WITNESS_URL"] == f"http://witness:{port}", name
        assert "witness_key" not in _secret_names(worker), f"{name} must not hold the witness's private key"
    signer = load_witness_key(str(generated_secrets / "witness_key"))
    assert signer.vkey() == (generated_secrets / "witness_verifier_key").read_text().strip()
    origin = _interpolate(witness["environment"]["WITNESS_LOG_ORIGIN"], _example_env())
    assert origin == _interpolate(SERVICES["portal-1"]["environment"]["PORTAL_AUDIT_LOG_ORIGIN"], _example_env())


def test_the_witness_trusts_the_key_the_workers_sign_checkpoints_with(generated_secrets):
    """The witness's --log-key, computed as its command does, is the workers' note verifier key."""
    origin = _interpolate(SERVICES["witness"]["environment"]["WITNESS_LOG_ORIGIN"], _example_env())
    printed = subprocess.run([sys.executable, "-m", "audit", "log-key", "--public-key",
                              str(generated_secrets / "audit_public_key.pem"), "--origin", origin],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    signer = NoteSigner(origin, load_signing_key(str(generated_secrets / "audit_signing_key")))
    assert printed == signer.vkey()
