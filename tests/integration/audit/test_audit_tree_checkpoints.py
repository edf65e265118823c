"""Signed tree checkpoints in a real database (SQLite and PostgreSQL): C2SP signed notes of the tree,
signed in the append's transaction when the newest is older than `checkpoint_seconds` and on demand,
every one kept, append-only like the rest of the log."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from audit import (
    AuditEvent,
    SigningKey,
    SqlAuditStore,
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_cosignature,
    audit_tree_node,
    create_tables,
    remove_append_only_guard,
    verify_store,
)
from audit.note import ALG_COSIGNATURE_V1, Note, NoteError, NoteSigner, Verifier, open_checkpoint
from audit.note import Checkpoint as NoteCheckpoint
from audit.store import DEFAULT_ORIGIN
from audit.tree import build_tree
from audit.tree_checkpoints import note_body
from audit.witness_client import add_checkpoint
from audit.witnessed import check_against_witness
from tests.support.portal_server import ROOT
from tests.support.witness_process import WitnessProcess

KEY = SigningKey.generate()
ORIGIN = "portal.test/audit"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    """A database with the audit tables, disposed of afterwards."""
    created = sa.create_engine(database_url)
    try:
        create_tables(created)
        yield created
    finally:
        created.dispose()


def _store(engine: sa.Engine, clock: Clock, seconds: float = 60) -> SqlAuditStore:
    return SqlAuditStore(engine, KEY, origin=ORIGIN, checkpoint_seconds=seconds, clock=clock)


def _append(store: SqlAuditStore, count: int) -> None:
    for i in range(count):
        store.append(AuditEvent(action="chart.read", outcome="allowed", details={"i": i}))


def test_the_first_append_signs_a_checkpoint_and_the_next_one_only_after_checkpoint_seconds(engine):
    clock = Clock()
    store = _store(engine, clock)
    _append(store, 5)
    assert [c.tree_size for c in store.tree_checkpoints()] == [1]
    clock.now += 59.9
    _append(store, 2)
    assert [c.tree_size for c in store.tree_checkpoints()] == [1]
    clock.now += 0.2
    _append(store, 1)
    assert [c.tree_size for c in store.tree_checkpoints()] == [1, 8]
    newest = store.latest_tree_checkpoint()
    assert newest.created == datetime.fromtimestamp(clock.now, timezone.utc)


def test_a_checkpoint_is_a_signed_note_of_the_trees_root_that_the_published_verifier_key_opens(engine):
    store = _store(engine, Clock())
    _append(store, 12)
    signed = store.sign_tree_checkpoint()
    vkey = store.tree_signer().vkey()
    assert vkey.startswith(ORIGIN + "+")
    checkpoint, _ = open_checkpoint(signed.note, [Verifier.from_vkey(vkey)], origin=ORIGIN)
    assert (checkpoint.size, checkpoint.root_hash) == (12, store.root(12)) == (signed.tree_size, signed.root_hash)
    forged = signed.note.replace("\n12\n", "\n11\n")
    with pytest.raises(NoteError, match="invalid signature"):
        open_checkpoint(forged, [Verifier.from_vkey(vkey)])


def test_every_checkpoint_is_kept_on_demand_ones_included(engine):
    clock = Clock()
    store = _store(engine, clock)
    _append(store, 3)
    store.sign_tree_checkpoint()
    store.sign_tree_checkpoint()
    clock.now += 61
    _append(store, 1)
    assert [c.tree_size for c in store.tree_checkpoints()] == [1, 3, 3, 4]
    assert [Note.parse(c.note).text.split("\n")[1] for c in store.tree_checkpoints()] == ["1", "3", "3", "4"]


def test_a_store_without_an_origin_signs_under_the_default_one(engine):
    """Signed tree checkpoints are the log's only integrity structure: every store signs them."""
    store = SqlAuditStore(engine, KEY)
    _append(store, 3)
    checkpoints = store.tree_checkpoints()
    assert checkpoints and all(note_body(checkpoint.note).origin == DEFAULT_ORIGIN for checkpoint in checkpoints)


def test_checkpoints_and_cosignatures_cannot_be_changed_or_deleted(engine):
    store = _store(engine, Clock())
    _append(store, 2)
    store.record_cosignature(2, store.root(2), "witness.test/w1+01020304", datetime.now(timezone.utc), "note\n")
    for table in (audit_tree_checkpoint, audit_tree_cosignature):
        for statement in (table.update().values(tree_size=99), table.delete()):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(statement)
    assert store.latest_cosignature().tree_size == 2


# --------------------------------------------------------------------------- python -m audit verify --witness-url


def _audit_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "verify", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_checks_a_database_against_its_witness_and_refuses_unusable_witness_input(tmp_path):
    """Exit 0 when the log holds what the witness cosigned; 1 once the tail is gone; 2 for a witness it cannot use."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = sa.create_engine(url)
    create_tables(engine)
    store = _store(engine, Clock())
    _append(store, 9)
    signed = store.sign_tree_checkpoint()
    log_key = store.tree_signer().vkey()
    (tmp_path / "witness").mkdir()
    with WitnessProcess(tmp_path / "witness", [log_key]) as witness:
        add_checkpoint(witness.url, signed.note, 0, [], witness.verifier)
        args = ["--db", url, "--witness-url", witness.url, "--witness-key", witness.verifier.vkey(),
                "--log-key", log_key, "--checkpoint-every", "1000"]
        intact = _audit_verify(*args)
        assert intact.returncode == 0 and "witness: the log holds the 9 entries it cosigned" in intact.stdout, intact

        other = NoteSigner("witness.test/w1", SigningKey.generate(), ALG_COSIGNATURE_V1).vkey()
        wrong_key = _audit_verify(*args[:4], "--witness-key", other, *args[6:])
        assert wrong_key.returncode == 2 and "does not verify" in wrong_key.stderr, wrong_key
        no_key = _audit_verify("--db", url, "--witness-url", witness.url)
        assert no_key.returncode == 2 and "--witness-url needs --witness-key" in no_key.stderr, no_key

        with engine.begin() as conn:
            remove_append_only_guard(conn)
            conn.execute(audit_entry.delete().where(audit_entry.c.seq > 6))
            conn.execute(audit_tree_node.delete())
            build_tree(conn)
        cut = _audit_verify(*args)
        assert cut.returncode == 1 and "truncated: the witness cosigned 9 entries, the log holds 6" in cut.stdout, cut
    unreachable = _audit_verify(*args)
    assert unreachable.returncode == 2 and "cannot check against the witness" in unreachable.stderr, unreachable
    engine.dispose()


def test_the_witness_check_takes_the_root_from_the_verified_pass_and_catches_a_rebuilt_log(engine):
    """Checkpoints deleted, an entry rewritten and the tree rebuilt: the log verifies on its own (no checkpoint is
    required yet), but the root of the entries the pass derived at the witnessed size is not the one cosigned."""
    store = _store(engine, Clock())
    _append(store, 9)
    cosigned = NoteCheckpoint(ORIGIN, 9, store.root())
    intact = verify_store(store, KEY.verify_key, roots_at=(9,))
    assert intact.ok and intact.roots == {9: cosigned.root_hash}
    assert check_against_witness(store, cosigned, intact.roots[9]) is None
    with engine.begin() as conn:
        remove_append_only_guard(conn)
        conn.execute(audit_tree_checkpoint.delete())
        conn.execute(audit_entry.update().where(audit_entry.c.seq == 3).values(reason="rewritten"))
        conn.execute(audit_tree_node.delete())
        build_tree(conn)
    rebuilt = verify_store(SqlAuditStore(engine, None, checkpoint_every=1000), KEY.verify_key, roots_at=(9,))
    assert rebuilt.ok
    for entries_root in (rebuilt.roots[9], None):  # from the pass, or read again
        problem = check_against_witness(store, cosigned, entries_root)
        assert (problem.kind, problem.position) == ("checkpoint_mismatch", 9) and "rewritten" in problem.message


def test_the_first_multiple_without_its_checkpoint_is_named(engine):
    """Appends sign a checkpoint at every multiple of checkpoint_every; a report asks which one, if any, is gone."""
    store = SqlAuditStore(engine, KEY, origin=ORIGIN, checkpoint_every=10)
    store.append_many(AuditEvent(action="chart.read", outcome="allowed") for _ in range(35))
    assert store.first_missing_checkpoint(35) is None and store.first_missing_checkpoint(9) is None
    with engine.begin() as conn:  # an attacker with the database
        remove_append_only_guard(conn)
        conn.execute(audit_tree_checkpoint.delete().where(audit_tree_checkpoint.c.tree_size == 20))
    assert store.first_missing_checkpoint(19) is None
    assert store.first_missing_checkpoint(35) == 20
