"""Incremental verification end to end, on PostgreSQL: a real portal (run.py) whose compliance officer
presses "Verify now" or "Full verification" on the Integrity page, and the real `flask --app portal audit-verify`.

A run starts after the checkpoint the last passing run recorded (signed with the log's key, in its audit.verify
event) and hashes only what is new; `--full` re-derives everything. Tampering after that checkpoint is caught
incrementally; tampering before it only by a full run (incremental runs trust what was verified before). A
record that was deleted or forged makes the next run start from an older record or run in full: never pass.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from audit import SqlAuditStore, audit_entry, canonical_json, load_signing_key
from audit.incremental import VerifiedHead, verify_since
from tests.support.audit_log import ORIGIN, audit_head, superuser_tampering, witnessed_everything, witnessed_portal
from tests.support.portal_server import ROOT, PortalServer, running_portal, sign_in
from tests.support.seed import ALICE

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

NEXT_START = re.compile(r"the next run starts from checkpoint (\d+) \((\d+) entries\)")


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """On PostgreSQL, as production runs; what the store does on each database is specified by
    tests/integration/audit/test_audit_incremental.py, on SQLite and PostgreSQL."""
    return postgres_url


def _one(portal: PortalServer, query) -> sa.Row:
    engine = sa.create_engine(portal.env["PORTAL_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(query).one()
    finally:
        engine.dispose()


def _grow(portal: PortalServer, clinician: requests.Session, entries: int) -> None:
    """Chart reads until the log holds at least `entries` more entries."""
    target = audit_head(portal) + entries
    while audit_head(portal) < target:
        assert clinician.get(f"{portal.url}/api/v1/patients/{ALICE}/results", timeout=10).status_code == 200


def _audit_verify(portal: PortalServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "portal", "audit-verify", *args], env=portal.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _passes(portal: PortalServer, mode: str, *args: str) -> int:
    """Run `flask audit-verify`, require it to pass in `mode`; the size of the checkpoint it recorded."""
    run = _audit_verify(portal, *args)
    assert run.returncode == 0 and f"mode: {mode}" in run.stdout, run.stdout + run.stderr
    return int(NEXT_START.search(run.stdout).group(2))


def _fails(portal: PortalServer, mode: str, *args: str) -> str:
    run = _audit_verify(portal, *args)
    assert run.returncode == 1 and run.stdout.startswith("FAILED: "), run.stdout + run.stderr
    assert f"mode: {mode}" in run.stdout, run.stdout
    return run.stdout


def _console_verify(portal: PortalServer, officer: requests.Session, mode: str) -> str:
    """The Integrity page after the officer pressed "Verify now" (incremental) or "Full verification"."""
    page = officer.get(f"{portal.url}/compliance/integrity", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    result = officer.post(f"{portal.url}/compliance/integrity/verify", data={"csrf_token": token, "mode": mode},
                          timeout=300)
    assert result.status_code == 200 and result.url.endswith("/compliance/integrity"), result.text[:300]
    return result.text


def _last_verification(portal: PortalServer) -> tuple[int, dict]:
    seq, details = _one(portal, sa.select(audit_entry.c.seq, audit_entry.c.details)
                        .where(audit_entry.c.action == "audit.verify").order_by(audit_entry.c.seq.desc()).limit(1))
    return seq, json.loads(details)


def _set_actor(portal: PortalServer, seq: int, actor: str | None) -> str | None:
    """What an attacker with the database does to one entry: rewrite who did it (the tree left alone)."""
    with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
        before = conn.execute(sa.select(audit_entry.c.actor_id).where(audit_entry.c.seq == seq)).scalar_one()
        conn.execute(audit_entry.update().where(audit_entry.c.seq == seq).values(actor_id=actor))
    return before


def test_verify_now_after_new_entries_hashes_only_them_and_checks_the_witness(database_url, tmp_path: Path):
    with witnessed_portal(tmp_path, database_url) as (portal, _witness):
        chen, cora = sign_in(portal.url, "dr.chen"), sign_in(portal.url, "cora")
        _grow(portal, chen, 60)
        first = _audit_verify(portal)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "mode: full" in first.stdout and "(the log has not been verified before)" in first.stdout
        verified = int(NEXT_START.search(first.stdout).group(2))

        _grow(portal, chen, 30)
        witnessed_everything(portal)
        page = _console_verify(portal, cora, "incremental")
        assert 'data-integrity="ok"' in page and 'data-verify-mode="incremental"' in page
        _, details = _last_verification(portal)
        assert details["mode"] == "incremental" and details["since_size"] == verified
        assert details["entries"] == details["tree_size"] - verified < verified  # only what is new was hashed
        assert f'data-testid="entries-hashed">{details["entries"]}<' in page
        assert details["witness"] == "checked" and details["witnessed_size"] >= verified

        again = _audit_verify(portal)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.startswith("OK: intact since checkpoint") and "mode: incremental" in again.stdout
        assert "witness: the log holds the" in again.stdout
        full = _console_verify(portal, cora, "full")
        assert 'data-integrity="ok"' in full and 'data-verify-mode="full"' in full and "(asked for)" in full
        _, details = _last_verification(portal)
        assert details["mode"] == "full" and details["entries"] == details["tree_size"]


def test_tampering_after_the_verified_checkpoint_fails_incrementally_and_before_it_only_a_full_run(
        database_url, tmp_path: Path):
    with running_portal(tmp_path, database_url, patients=4) as portal:
        chen, cora = sign_in(portal.url, "dr.chen"), sign_in(portal.url, "cora")
        _grow(portal, chen, 40)
        verified = _passes(portal, "full")

        _grow(portal, chen, 20)
        after = verified + 5
        actor = _set_actor(portal, after, "mallory")
        page = _console_verify(portal, cora, "incremental")
        assert 'data-integrity="failed"' in page and 'data-verify-mode="incremental"' in page
        assert f"tree_mismatch at position {after}." in page
        assert "(the last verification failed)" in _fails(portal, "full")  # a failure is not forgotten

        _set_actor(portal, after, actor)  # undone: a full run passes again and records where it ended
        verified = _passes(portal, "full")
        _set_actor(portal, 3, "mallory")
        assert _passes(portal, "incremental") > verified  # before the checkpoint: trusted, not re-hashed
        page = _console_verify(portal, cora, "full")
        assert 'data-integrity="failed"' in page and 'data-verify-mode="full"' in page and "at position 3." in page
        assert "at position 3: " in _fails(portal, "full")  # and every run after that is full until it passes


@contextmanager
def _portal_store(portal: PortalServer) -> Iterator[SqlAuditStore]:
    """The portal's audit store, with its key and origin (what signs checkpoints on demand)."""
    engine = sa.create_engine(portal.env["PORTAL_DATABASE_URL"])
    try:
        yield SqlAuditStore(engine, load_signing_key(portal.env["PORTAL_AUDIT_SIGNING_KEY"]), origin=ORIGIN)
    finally:
        engine.dispose()


def _rewrite_details(portal: PortalServer, seq: int, **changes) -> None:
    with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
        details = json.loads(conn.execute(sa.select(audit_entry.c.details).where(audit_entry.c.seq == seq)).scalar_one())
        forged = canonical_json({**details, **changes}).decode()
        conn.execute(audit_entry.update().where(audit_entry.c.seq == seq).values(details=forged))


def test_a_deleted_or_forged_record_of_the_last_verification_never_lets_a_run_pass(database_url, tmp_path: Path):
    with running_portal(tmp_path, database_url, patients=4, PORTAL_AUDIT_LOG_ORIGIN=ORIGIN) as portal:
        chen = sign_in(portal.url, "dr.chen")
        _grow(portal, chen, 40)
        _passes(portal, "full")
        _grow(portal, chen, 20)
        _passes(portal, "incremental")
        record, _ = _last_verification(portal)
        _grow(portal, chen, 5)

        # Deleted: the newest record gone, the run starts from the one before and finds the hole it left.
        with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
            row = conn.execute(sa.select(audit_entry).where(audit_entry.c.seq == record)).one()._asdict()
            conn.execute(audit_entry.delete().where(audit_entry.c.seq == record))
        assert f"FAILED: deleted at position {record}:" in _fails(portal, "incremental")
        with superuser_tampering(portal.env["PORTAL_DATABASE_URL"]) as conn:
            conn.execute(audit_entry.insert(), row)  # put back: the next run is full (the last one failed), and passes
        _passes(portal, "full")

        # Forged: the newest record moved past an entry edited since, to a later checkpoint (whose signature holds).
        record, _ = _last_verification(portal)
        _grow(portal, chen, 20)
        with _portal_store(portal) as store:
            later = store.sign_tree_checkpoint()
        assert later.tree_size > record + 1
        _set_actor(portal, record + 1, "mallory")
        _rewrite_details(portal, record, verified_checkpoint=later.id, verified_size=later.tree_size,
                         verified_root=base64.b64encode(later.root_hash).decode())
        with _portal_store(portal) as store:  # what trusting the record unsigned would have let through
            assert verify_since(store, store.tree_signer().verifier,
                                VerifiedHead(later.id, later.tree_size, later.root_hash)).ok
        failed = _fails(portal, "full")
        assert "the last verification's record of its checkpoint cannot be used: invalid signature" in failed
