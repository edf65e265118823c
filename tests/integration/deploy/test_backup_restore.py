"""Backup and restore as deploy/README.md ("Backup and restore") gives them, run for real on PostgreSQL.

A seeded portal is used (a note written, charts read, signed checkpoints issued) and dumped with pg_dump
while it serves. The dump is restored into a new database, migrated, and served by a new portal with the
same keyring and audit signing key: charts decrypt, the note is there, `flask --app portal audit-verify`
finds the log, its Merkle tree and its signed checkpoints intact, and the log goes on. The dump holds no key and no PHI
in the clear. The same restored database served with another keyring fails loudly and serves nothing:
not ready (/readyz 503, keyring "failed"), every read that would decrypt answers 500 `undecryptable`
without a value, and the log names the table, column and row at ERROR.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
import sqlalchemy as sa

from portal.crypto import generate_keyring_json
from tests.support.portal_server import (
    DEMO_PASSWORDS,
    ROOT,
    PortalServer,
    csrf_token,
    flask_command,
    parse_form,
    running_portal,
    sign_in,
)
from tests.support.seed import ALICE, ALICE_MRN
from tests.support.shared_services import create_database, drop_database

NOTE = {"title": "Backup drill", "text": "Written before the backup, read after the restore."}


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as the PostgreSQL tools take it."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: the PostgreSQL client tools are part of `make test` (Debian: postgresql-client)")
    return found


@pytest.fixture
def restored_url() -> Iterator[str]:
    """An empty database beside the source one, as `createdb` makes it for a restore; dropped afterwards."""
    url = create_database("portal_restored")
    try:
        yield url
    finally:
        drop_database(url)


def _audit_head(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        entries = conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()
        checkpoints = conn.execute(sa.text("SELECT count(*) FROM audit_tree_checkpoint")).scalar_one()
    engine.dispose()
    return entries, checkpoints


def _audit_verify(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "portal", "audit-verify"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.postgres
def test_a_dump_restores_into_a_portal_that_reads_charts_and_verifies_its_audit_log(postgres_url, restored_url, tmp_path):
    dump = tmp_path / "portal.dump"
    with running_portal(tmp_path / "source", postgres_url, PORTAL_AUDIT_CHECKPOINT_EVERY="3") as source:
        chen = sign_in(source.url, "dr.chen")
        saved = chen.post(f"{source.url}/api/v1/patients/{ALICE}/notes", json=NOTE, timeout=10,
                          headers={"X-CSRFToken": csrf_token(chen, source.url + "/")})
        assert saved.status_code == 201, saved.text
        assert sign_in(source.url, "alice").get(source.url + "/api/v1/me/chart", timeout=10).status_code == 200
        # Online: pg_dump reads one consistent snapshot while the portal keeps serving.
        subprocess.run([_tool("pg_dump"), "--format=custom", "--file", str(dump), "--dbname", _libpq(postgres_url)],
                       check=True, capture_output=True, timeout=300)
        entries_backed_up, checkpoints_backed_up = _audit_head(postgres_url)  # nothing is served meanwhile
        keyring, signing_key = (Path(source.env[name]).read_text() for name in ("PORTAL_KEYRING", "PORTAL_AUDIT_SIGNING_KEY"))
        env, port = source.env, source.port
    assert checkpoints_backed_up >= 1, "the drill needs signed checkpoints in the backup"

    # The dump carries ciphertext and hashes only: no key of the keyring, no signing key, no PHI in the clear.
    listing = subprocess.run([_tool("pg_restore"), "--file=-", str(dump)], check=True, capture_output=True,
                             text=True, timeout=300).stdout
    assert "audit_entry" in listing and "Moreau" not in listing and ALICE_MRN not in listing and NOTE["text"] not in listing
    for key in json.loads(keyring)["keys"].values():
        assert key not in listing
    assert signing_key.strip().splitlines()[1] not in listing

    subprocess.run([_tool("pg_restore"), "--exit-on-error", "--no-owner", "--dbname", _libpq(restored_url), str(dump)],
                   check=True, capture_output=True, timeout=300)
    restored = {**env, "PORTAL_DATABASE_URL": restored_url}
    flask_command(restored, "init-db")  # a backup from an older release is brought to this schema
    assert _audit_head(restored_url) == (entries_backed_up, checkpoints_backed_up)
    verified = _audit_verify(restored)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr

    # The same address as before (the accounts belong to the issuer at that address), as after a real restore.
    with PortalServer(restored, port, tmp_path / "restored.log") as portal:
        ready = requests.get(portal.url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["keyring"] == "ok", ready.text
        chen = sign_in(portal.url, "dr.chen")
        notes = chen.get(f"{portal.url}/api/v1/patients/{ALICE}/notes", timeout=10)
        assert notes.status_code == 200 and NOTE["text"] in [note["text"] for note in notes.json()["notes"]]
        chart = sign_in(portal.url, "alice").get(portal.url + "/api/v1/me/chart", timeout=10)
        assert chart.status_code == 200 and chart.json()["demographics"]["family_name"] == "Moreau"
    # The restored log goes on: the reads above were appended to the same log, which still verifies.
    assert _audit_head(restored_url)[0] > entries_backed_up
    verified = _audit_verify(restored)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr

    # The same restored database with another deployment's keyring: loud, and nothing served.
    other_keyring = tmp_path / "other-keyring.json"
    other_keyring.write_text(generate_keyring_json())
    wrong = {**restored, "PORTAL_KEYRING": str(other_keyring)}
    log = tmp_path / "wrong-keyring.log"
    with PortalServer(wrong, port, log) as portal:
        ready = requests.get(portal.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["keyring"] == "failed", ready.text
        # Signing in loads the person's (encrypted) name: refused with the standard error, no value in it.
        attempt = _sign_in_attempt(portal.url, "dr.chen")
        assert attempt.status_code == 500, attempt.text[:300]
        api = requests.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=10)
        assert api.status_code == 401  # and no session can be had to ask again
        metrics = requests.get(portal.url + "/metrics", headers={"Authorization": "Bearer test-metrics-token"}, timeout=10)
        failures = next(line for line in metrics.text.splitlines() if line.startswith("portal_decrypt_failures_total "))
        assert float(failures.split()[1]) >= 1
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert any(line["message"] == "the keyring cannot open the stored records" and
               "cannot decrypt" in line["error"] for line in errors), errors
    assert any(line["message"] == "field decryption failed" and "user_account." in line["error"] for line in errors), errors
    for value in ("Moreau", ALICE_MRN, "Chen", NOTE["text"]):
        assert value not in log.read_text()


def _sign_in_attempt(url: str, login: str) -> requests.Response:
    """A sign-in through the development provider's form, returning the portal's final answer whatever it is."""
    session = requests.Session()
    form_page = session.get(f"{url}/auth/login", timeout=10)
    form = parse_form(form_page.text)
    form.fields.update(login=login, password=DEMO_PASSWORDS[login])
    return session.post(urljoin(form_page.url, form.action or form_page.url), data=form.fields, timeout=10)
