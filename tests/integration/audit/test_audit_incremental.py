"""Incremental verification from the last verified checkpoint (audit/incremental.py), on SQLite and PostgreSQL:
only the entries after it are hashed; an edit after it, a history rewritten under it, its checkpoint gone, a
forged checkpoint since, or a tail cut below it all fail; an edit before it is left to a full run."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from audit import (
    AuditEvent,
    SigningKey,
    SqlAuditStore,
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_node,
    create_tables,
)
from audit.incremental import VerifiedHead, anchor_after_full, check_witnessed, verify_since
from audit.note import Checkpoint, NoteSigner
from audit.tree import build_tree
from audit.tree_verify import verify_tree
from tests.support.audit_log import superuser_tampering

KEY = SigningKey.generate()
ORIGIN = "portal.test/audit"
VERIFIED = 50
NEW = 7


@pytest.fixture
def store(database_url) -> Iterator[SqlAuditStore]:
    engine = sa.create_engine(database_url)
    try:
        create_tables(engine)
        yield SqlAuditStore(engine, KEY, origin=ORIGIN)
    finally:
        engine.dispose()


def _append(store: SqlAuditStore, count: int) -> None:
    store.append_many([AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i}") for i in range(count)])


@pytest.fixture
def verified(store) -> VerifiedHead:
    """A log of VERIFIED entries verified in full, its checkpoint recorded, then NEW entries and a checkpoint more."""
    _append(store, VERIFIED)
    store.sign_tree_checkpoint()
    full = verify_tree(store)
    assert full.ok
    head = anchor_after_full(store, _log(), full.head)
    assert isinstance(head, VerifiedHead) and head.size == VERIFIED
    _append(store, NEW)
    store.sign_tree_checkpoint()
    return head


def _log():
    return NoteSigner(ORIGIN, KEY).verifier


def _edit(store: SqlAuditStore, seq: int) -> None:
    with superuser_tampering(store.engine.url.render_as_string(hide_password=False)) as conn:
        conn.execute(audit_entry.update().where(audit_entry.c.seq == seq).values(actor_id="mallory"))


def test_only_the_entries_after_the_verified_checkpoint_are_hashed(store, verified):
    report = verify_since(store, _log(), verified)
    assert report.ok, report.problem
    assert report.entries_checked == NEW and report.checkpoints_checked == 2
    assert report.tree.size == VERIFIED + NEW and report.anchor.size == VERIFIED + NEW
    assert report.anchor.root == store.root(VERIFIED + NEW)


def test_an_entry_edited_after_the_verified_checkpoint_is_found(store, verified):
    _edit(store, VERIFIED + 3)
    report = verify_since(store, _log(), verified)
    assert not report.ok and (report.problem.kind, report.problem.position) == ("tree_mismatch", VERIFIED + 3)


def test_an_entry_edited_before_it_is_trusted_incrementally_and_found_by_a_full_run(store, verified):
    _edit(store, 10)
    assert verify_since(store, _log(), verified).ok  # incremental runs trust what was verified before
    full = verify_tree(store)
    assert not full.ok and (full.problem.kind, full.problem.position) == ("tree_mismatch", 10)


def test_a_history_rewritten_and_rehashed_under_it_is_inconsistent_with_its_signed_root(store, verified):
    _edit(store, 10)
    with superuser_tampering(store.engine.url.render_as_string(hide_password=False)) as conn:
        conn.execute(audit_tree_node.delete())
        build_tree(conn)
    report = verify_since(store, _log(), verified)
    assert not report.ok and report.problem.kind == "inconsistent"


def test_the_checkpoint_it_started_from_deleted_fails(store, verified):
    with superuser_tampering(store.engine.url.render_as_string(hide_password=False)) as conn:
        conn.execute(audit_tree_checkpoint.delete().where(audit_tree_checkpoint.c.id == verified.checkpoint_id))
    report = verify_since(store, _log(), verified)
    assert not report.ok and report.problem.kind == "checkpoint_mismatch" and "no longer stored" in report.problem.message


def test_a_checkpoint_signed_since_with_another_key_fails(store, verified):
    forger = NoteSigner(ORIGIN, SigningKey.generate())
    size = VERIFIED + NEW
    with store.engine.begin() as conn:
        conn.execute(audit_tree_checkpoint.insert(), {"tree_size": size, "root_hash": store.root(size),
                                                      "created": store.latest_tree_checkpoint().created,
                                                      "note": Checkpoint(ORIGIN, size, store.root(size)).sign(forger)})
    report = verify_since(store, _log(), verified)
    assert not report.ok and report.problem.kind == "bad_checkpoint_signature"


def test_a_tail_cut_below_the_verified_checkpoint_is_truncation(store, verified):
    with superuser_tampering(store.engine.url.render_as_string(hide_password=False)) as conn:
        conn.execute(audit_entry.delete().where(audit_entry.c.seq > VERIFIED - 5))
        conn.execute(audit_tree_node.delete())
        build_tree(conn)
    report = verify_since(store, _log(), verified)
    assert not report.ok and report.problem.kind == "truncated"


def test_the_witness_check_is_a_consistency_proof_against_the_verified_tree(store, verified):
    tree = verify_since(store, _log(), verified).tree
    cosigned = Checkpoint(ORIGIN, VERIFIED, verified.root)
    assert check_witnessed(store, cosigned, tree) is None
    forked = Checkpoint(ORIGIN, VERIFIED, store.root(VERIFIED - 1))
    assert check_witnessed(store, forked, tree).kind == "checkpoint_mismatch"
    beyond = Checkpoint(ORIGIN, VERIFIED + NEW + 5, verified.root)
    problem = check_witnessed(store, beyond, tree)
    assert problem.kind == "truncated" and f"the witness cosigned {VERIFIED + NEW + 5} entries" in problem.message


def test_a_checkpoint_deleted_since_the_verified_one_fails_as_a_full_run_would(database_url):
    """The attack of test_audit_checkpoints_deleted.py after the last verification: the checkpoint of a multiple of
    checkpoint_every gone, an entry under it rewritten and the tree rebuilt. Nothing re-derived disagrees, so only
    the missing checkpoint tells."""
    engine = sa.create_engine(database_url)
    try:
        create_tables(engine)
        store = SqlAuditStore(engine, KEY, origin=ORIGIN, checkpoint_every=10)
        _append(store, 25)
        store.sign_tree_checkpoint()
        full = verify_tree(store)
        head = anchor_after_full(store, _log(), full.head)
        assert isinstance(head, VerifiedHead) and head.size == 25
        _append(store, 20)  # checkpoints at 30 and 40
        assert verify_since(store, _log(), head).ok
        with superuser_tampering(database_url) as conn:
            conn.execute(audit_tree_checkpoint.delete().where(audit_tree_checkpoint.c.tree_size.in_([30, 40])))
            conn.execute(audit_entry.update().where(audit_entry.c.seq == 28).values(actor_id="mallory"))
            conn.execute(audit_tree_node.delete())
            build_tree(conn)
        report = verify_since(store, _log(), head)
        assert not report.ok and report.problem.kind == "checkpoint_missing", report.problem
        assert report.problem.message == "checkpoint missing at seq 30"
    finally:
        engine.dispose()
