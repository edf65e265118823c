"""Deleting the signed checkpoints must not leave a bare log that anyone can rewrite (issue 12, item 1).

As found (then with a hash chain): with 270 entries, a database superuser deleted every signed checkpoint
(on PostgreSQL after `SET session_replication_role = replica`, which switches the append-only triggers off
for that session), removed a break-glass access from the log and re-hashed it. `flask audit-verify`,
`python -m audit verify --db` and the console's "Verify now" all said it was intact, and the access vanished
from the patient's accounting of disclosures. Every verifier requires a signed tree checkpoint at every
multiple of PORTAL_AUDIT_CHECKPOINT_EVERY (100 here) up to the head; the same attack on the Merkle tree
(tree checkpoints deleted, entries removed and renumbered, the tree rebuilt) fails them all.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import (
    Entry,
    SqlAuditStore,
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_node,
    load_signing_key,
    verify_store,
)
from audit.queries import entry_from_row
from audit.store import entry_to_row
from audit.tree import build_tree
from tests.support.audit_log import audit_head, console_verify_now, flask_audit_verify, superuser_tampering
from tests.support.environment import ROOT
from tests.support.portal_server import PortalServer, break_glass, running_portal, sign_in
from tests.support.seed import ALICE

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

REASON = "Unconscious in the emergency department, allergies unknown"
ENTRIES = 270
MISSING = "checkpoint missing at seq 100"
UNVERIFIED = {"error": {"code": "audit_log_unverified",
                        "message": "The audit log failed verification; the report cannot be issued. "
                                   "Compliance has been alerted."}}


@pytest.fixture
def portal(database_url, tmp_path) -> Iterator[PortalServer]:
    with running_portal(tmp_path, database_url, patients=4) as server:
        yield server


@pytest.fixture
def people(portal) -> dict:
    """Dr. Reyes breaks the glass on Alice's chart, Dr. Chen reads it until the log holds ENTRIES entries."""
    sessions = {login: sign_in(portal.url, login) for login in ("alice", "dr.chen", "dr.reyes", "cora")}
    opened = break_glass(sessions["dr.reyes"], portal.url, ALICE, REASON, "dr.reyes")
    assert opened.status_code == 200, opened.text[:300]
    while audit_head(portal) < ENTRIES:
        for _ in range(25):
            assert sessions["dr.chen"].get(f"{portal.url}/api/v1/patients/{ALICE}/results", timeout=10).ok
    return sessions


def _remove_and_rehash(conn: sa.Connection, unwanted: Callable[[Entry], bool]) -> int:
    """Drop the unwanted entries, renumber the rest and rebuild the Merkle tree over them (an attacker who
    knows the schema does that)."""
    entries = [entry_from_row(row) for row in conn.execute(sa.select(audit_entry).order_by(audit_entry.c.seq))]
    kept = []
    for entry in entries:
        if not unwanted(entry):
            kept.append(Entry(len(kept) + 1, entry.event))
    conn.execute(audit_entry.delete())
    conn.execute(audit_entry.insert(), [entry_to_row(entry) for entry in kept])
    conn.execute(audit_tree_node.delete())
    assert build_tree(conn) == len(kept)
    return len(entries) - len(kept)


def _is_break_glass_on_alice(entry: Entry) -> bool:
    event = entry.event
    return event.patient_id == ALICE and (event.action.startswith("break_glass.") or "break_glass" in event.details)


# --------------------------------------------------------------------------- what each verifier says


def _public_key(portal, cora, tmp_path: Path) -> Path:
    """The key an auditor pins, downloaded from the console's Integrity page."""
    pem = cora.get(f"{portal.url}/compliance/integrity/public-key.pem", timeout=10)
    assert pem.status_code == 200
    path = tmp_path / "audit-public-key.pem"
    path.write_bytes(pem.content)
    return path


def _cli_verify(portal, public_key: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "verify", "--db", portal.env["PORTAL_DATABASE_URL"],
                           "--public-key", str(public_key)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _disclosures(portal, alice):
    return alice.get(f"{portal.url}/api/v1/patients/{ALICE}/disclosures", timeout=300)


def _assert_every_verifier_fails(portal, people, public_key: Path) -> None:
    """Full runs: the checkpoints deleted lie before the last verified one, which incremental runs trust."""
    flask = flask_audit_verify(portal, "--full")
    assert flask.returncode == 1, flask.stdout + flask.stderr
    assert flask.stdout.startswith(f"FAILED: checkpoint_missing at position 100: {MISSING}"), flask.stdout
    cli = _cli_verify(portal, public_key)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert cli.stdout.startswith(f"FAILED: checkpoint_missing at position 100: {MISSING}"), cli.stdout
    console = console_verify_now(portal, people["cora"], "full")
    assert 'data-integrity="failed"' in console and MISSING in console
    refused = _disclosures(portal, people["alice"])
    assert refused.status_code == 409 and refused.json() == UNVERIFIED
    assert "Moreau" not in refused.text


def _assert_every_verifier_passes(portal, people, public_key: Path) -> list[dict]:
    flask = flask_audit_verify(portal)
    assert flask.returncode == 0 and flask.stdout.startswith("OK: log intact"), flask.stdout + flask.stderr
    cli = _cli_verify(portal, public_key)
    assert cli.returncode == 0 and cli.stdout.startswith("OK: log intact"), cli.stdout + cli.stderr
    assert 'data-integrity="ok"' in console_verify_now(portal, people["cora"])
    report = _disclosures(portal, people["alice"])
    assert report.status_code == 200, report.text
    return report.json()["lines"]


# --------------------------------------------------------------------------- the tests


def test_deleted_checkpoints_then_a_removed_break_glass_access_fail_every_verifier(portal, people, tmp_path):
    """The attack end to end: the checkpoints deleted, then the break-glass entries removed and the log re-hashed."""
    public_key = _public_key(portal, people["cora"], tmp_path)
    lines = _assert_every_verifier_passes(portal, people, public_key)
    assert any(line["break_glass"] and line["purpose"] == REASON for line in lines)

    url = portal.env["PORTAL_DATABASE_URL"]
    with superuser_tampering(url) as conn:
        assert conn.execute(audit_tree_checkpoint.delete()).rowcount >= ENTRIES // 100
    _assert_every_verifier_fails(portal, people, public_key)

    with superuser_tampering(url) as conn:
        conn.execute(audit_tree_checkpoint.delete())  # again: the verifications above appended and signed more
        assert _remove_and_rehash(conn, _is_break_glass_on_alice) >= 2  # the grant and the reads under it
    # What the attacker achieved: a log whose tree holds exactly its entries, with no trace of the emergency access.
    engine = sa.create_engine(url)
    try:
        store = SqlAuditStore(engine, None, checkpoint_every=10**9)  # as if no checkpoint were ever required
        assert verify_store(store, load_signing_key(portal.env["PORTAL_AUDIT_SIGNING_KEY"]).verify_key).ok
        assert not any(_is_break_glass_on_alice(entry) for entry in store.iter_entries())
    finally:
        engine.dispose()
    _assert_every_verifier_fails(portal, people, public_key)
