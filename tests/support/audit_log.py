"""The audit log of a running test portal: read as a test reads it, verified as an operator or a compliance
officer verifies it, and edited as an attacker with the database edits it."""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from audit import (
    audit_entry,
    audit_tree_cosignature,
    generate_signing_key_pem,
    install_append_only_guard,
    load_signing_key,
    remove_append_only_guard,
)
from audit.note import NoteSigner
from portal.crypto import generate_keyring_json
from tests.support.database import connected
from tests.support.environment import ROOT
from tests.support.portal_server import PortalServer, running_portal
from tests.support.waiting import wait_until
from tests.support.witness_process import WitnessProcess

ORIGIN = "portal.test/audit"
WITNESS_WAIT_SECONDS = 60


def audit_rows(database: str | sa.Connection, **equals: Any) -> list[dict[str, Any]]:
    """Rows of the portal's audit_entry table whose columns equal ``equals``, oldest first.

    ``database``: a portal's database URL, or the connection of an in-process test (``portal.database`` is either)."""
    query = sa.select(audit_entry).order_by(audit_entry.c.seq)
    for column, value in equals.items():
        query = query.where(audit_entry.c[column] == value)
    with connected(database) as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def scalar(database_url: str, query) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar_one() or 0
    finally:
        engine.dispose()


def audit_head(portal: PortalServer) -> int:
    """The newest entry's seq (the log's size)."""
    return scalar(portal.env["PORTAL_DATABASE_URL"], sa.select(sa.func.max(audit_entry.c.seq)))


def cosigned_size(portal: PortalServer) -> int:
    return scalar(portal.env["PORTAL_DATABASE_URL"], sa.select(sa.func.max(audit_tree_cosignature.c.tree_size)))


@contextmanager
def superuser_tampering(database: str | sa.Engine) -> Iterator[sa.Connection]:
    """What an attacker with the database does: PostgreSQL triggers off for one superuser session; SQLite's dropped."""
    url = database.url.render_as_string(hide_password=False) if isinstance(database, sa.Engine) else database
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET session_replication_role = replica")
            else:
                remove_append_only_guard(conn)
            yield conn
            if conn.dialect.name == "sqlite":
                install_append_only_guard(conn)
    finally:
        engine.dispose()


def flask_audit_verify(portal: PortalServer, *args: str) -> subprocess.CompletedProcess:
    """`flask audit-verify` as the operator runs it, with the portal's own settings."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "portal", "audit-verify", *args], env=portal.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def console_verify_now(portal: PortalServer, cora: requests.Session, mode: str = "incremental") -> str:
    """The Integrity page after "Verify now" (or "Full verification", mode="full"): the flashed result and the
    last verification."""
    page = cora.get(f"{portal.url}/compliance/integrity", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.split("Verify now", 1)[1]).group(1)
    result = cora.post(f"{portal.url}/compliance/integrity/verify", data={"csrf_token": token, "mode": mode},
                       timeout=300)
    assert result.status_code == 200 and result.url.endswith("/compliance/integrity")
    return result.text


def log_vkey(tmp: Path) -> str:
    """The portal's secrets made first (portal_env keeps them), so the witness can be told the log's key."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "keyring.json").write_text(generate_keyring_json())
    pem = generate_signing_key_pem()
    (tmp / "audit-signing-key.pem").write_bytes(pem.encode() if isinstance(pem, str) else pem)
    return NoteSigner(ORIGIN, load_signing_key(str(tmp / "audit-signing-key.pem"))).vkey()


@contextmanager
def witnessed_portal(tmp: Path, database_url: str, **overrides: str) -> Iterator[tuple[PortalServer, WitnessProcess]]:
    """A portal whose checkpoints a real witness process cosigns in the background (an idle tail after 1 s)."""
    vkey = log_vkey(tmp)
    (tmp / "witness").mkdir()
    with WitnessProcess(tmp / "witness", [vkey]) as witness:
        settings = {"PORTAL_AUDIT_LOG_ORIGIN": ORIGIN, "PORTAL_AUDIT_WITNESS_URL": witness.url,
                    "PORTAL_AUDIT_WITNESS_KEY": witness.verifier.vkey(), "PORTAL_AUDIT_CHECKPOINT_SECONDS": "1",
                    **overrides}
        with running_portal(tmp, database_url, patients=4, **settings) as portal:
            yield portal, witness


def witnessed_everything(portal: PortalServer) -> int:
    """Wait until the witness has cosigned the whole log; the size it cosigned."""
    return wait_until(lambda: (size := cosigned_size(portal)) >= audit_head(portal) and size,
                      WITNESS_WAIT_SECONDS, "the witness to catch up", interval=0.2)
