"""Create the development secrets `make run` needs, once: `python -m portal.devsetup`.

Writes instance/dev.env (PORTAL_* secrets for the embedded default) and the key files it names,
including the audit witness's own key (instance/witness.key), which `make run` starts the witness
with. Existing files are kept, so demo data stays readable across runs; a dev.env from before the
witness gets its PORTAL_AUDIT_WITNESS_KEY line appended. The Makefile adds the addresses
(PORTAL_EXTERNAL_URL, PORTAL_OIDC_ISSUER, PORTAL_AUDIT_WITNESS_URL), which follow the ports.
Never used in production.
"""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

from audit import generate_signing_key_pem
from audit.witness import load_witness_key, write_witness_key
from portal.config import INSTANCE_DIR
from portal.crypto import write_dev_keyring


def write_once(path: Path, content: str | bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.touch(mode=0o600)
    path.write_bytes(data)


WITNESS_NAME = "localhost/witness"


def witness_verifier_key(path: Path) -> str:
    """The development witness's verifier key, creating its cosigner key (owner-only) the first time."""
    if not path.exists():
        return write_witness_key(WITNESS_NAME, str(path)).vkey()
    return load_witness_key(str(path)).vkey()


def ensure_setting(env_file: Path, name: str, value: str) -> None:
    """Append `name=value` to an env file that lacks the setting (one written before it existed)."""
    lines = env_file.read_text().splitlines()
    if not any(line.startswith(f"{name}=") for line in lines):
        env_file.write_text("\n".join([*lines, f"{name}={value}", ""]))


def main(instance: Path = INSTANCE_DIR) -> Path:
    instance.mkdir(parents=True, exist_ok=True)
    keyring, signing_key, env_file = instance / "keyring.json", instance / "audit-signing-key.pem", instance / "dev.env"
    write_dev_keyring(str(keyring))
    write_once(signing_key, generate_signing_key_pem())
    write_once(env_file, "\n".join([
        "PORTAL_ENV=development",
        f"PORTAL_SECRET_KEY={secrets.token_urlsafe(48)}",
        f"PORTAL_DATABASE_URL=sqlite:///{instance / 'portal.db'}",
        f"PORTAL_KEYRING={keyring}",
        f"PORTAL_AUDIT_SIGNING_KEY={signing_key}",
        "PORTAL_DEV_IDP=1",
        "PORTAL_OIDC_CLIENT_ID=portal-dev",
        f"PORTAL_OIDC_CLIENT_SECRET={secrets.token_urlsafe(32)}",
        f"PORTAL_METRICS_TOKEN={secrets.token_urlsafe(24)}",
        "",
    ]))
    ensure_setting(env_file, "PORTAL_AUDIT_WITNESS_KEY", witness_verifier_key(instance / "witness.key"))
    return env_file


if __name__ == "__main__":
    print(f"development settings in {main()}", file=sys.stderr)
