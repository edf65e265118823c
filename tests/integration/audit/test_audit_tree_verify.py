"""Verifying the audit log's stored Merkle tree in a real database (SQLite and PostgreSQL), as
audit/tree_verify.py does: a full run re-derives every stored hash and locates what was changed; an
incremental run hashes only the new entries and proves the rest consistent with the trusted head."""
from __future__ import annotations

import sqlalchemy as sa

from audit import KINDS, SigningKey, SqlAuditStore, verify_store
from audit.schema import audit_entry, audit_tree_checkpoint, audit_tree_node, create_tables
from audit.tree import build_tree
from audit.tree_verify import TreeHead, verify_tree
from tests.support.audit_events import numbered_event
from tests.support.audit_log import superuser_tampering

KEY = SigningKey.generate()


def _set_node(conn: sa.Connection, level: int, index: int, digest: bytes) -> None:
    node = (audit_tree_node.c.level == level) & (audit_tree_node.c.idx == index)
    conn.execute(audit_tree_node.update().where(node).values(hash=digest))


def _rebuild_tree(conn: sa.Connection) -> None:
    conn.execute(audit_tree_node.delete())
    build_tree(conn)


def _grown_store(engine: sa.Engine, count: int = 3000) -> SqlAuditStore:
    create_tables(engine)
    store = SqlAuditStore(engine, KEY, checkpoint_every=100)
    for start in range(0, count, 500):
        store.append_many(numbered_event(i) for i in range(start, min(count, start + 500)))
    return store


def test_full_verification_re_derives_every_stored_hash_and_locates_what_was_changed(engine):
    store = _grown_store(engine)
    good = verify_tree(store)
    assert good.ok and good.head == TreeHead(3000, store.root()) and good.entries_checked == 3000
    report = verify_store(store, KEY.verify_key)
    assert report.ok and report.tree == good.head and "Merkle tree of 3000 entries" in report.summary()
    tampering = [
        (lambda conn: _set_node(conn, 0, 1233, b"\x00" * 32), ("tree_mismatch", 1234), "level 0, index 1233"),
        (lambda conn: _set_node(conn, 3, 100, b"\x00" * 32), ("tree_mismatch", 801), "entries 801 to 808"),
        (lambda conn: conn.execute(audit_tree_node.delete().where(audit_tree_node.c.level == 5)),
         ("tree_mismatch", 1), "no stored hash at level 5"),
        (lambda conn: conn.execute(audit_entry.delete().where(audit_entry.c.seq > 2990)),
         ("truncated", 2991), "the tree has 3000 leaves but the log ends at entry 2990"),
    ]
    for tamper, (kind, position), words in tampering:
        with superuser_tampering(engine) as conn:
            tamper(conn)
        report = verify_tree(store)
        assert not report.ok and (report.problem.kind, report.problem.position) == (kind, position), report.problem
        assert words in report.problem.message
        chain_and_tree = verify_store(store, KEY.verify_key)
        assert not chain_and_tree.ok and chain_and_tree.problem.kind in KINDS
        _reset(engine, store)  # the next case starts from an intact log


def _reset(engine: sa.Engine, store: SqlAuditStore) -> None:
    with superuser_tampering(engine) as conn:
        for table in (audit_tree_node, audit_entry, audit_tree_checkpoint):
            conn.execute(table.delete())
    for start in range(0, 3000, 500):
        store.append_many(numbered_event(i) for i in range(start, start + 500))
    assert verify_tree(store).ok


def test_a_log_whose_tree_lost_its_tail_is_reported(engine):
    store = _grown_store(engine, 40)
    with superuser_tampering(engine) as conn:
        for level in range(6):  # every hash over entries 33 to 40
            nodes = audit_tree_node.c
            conn.execute(audit_tree_node.delete().where((nodes.level == level) & (nodes.idx >= 32 >> level)))
    report = verify_tree(store)
    assert (report.problem.kind, report.problem.position) == ("tree_mismatch", 33)
    assert "entries 33 to 40 have no leaf in the tree" in report.problem.message


def test_incremental_verification_hashes_only_the_new_entries_and_checks_consistency(engine):
    store = _grown_store(engine)
    trusted = verify_tree(store).head
    store.append_many(numbered_event(i) for i in range(3000, 3123))
    report = verify_tree(store, trusted)
    assert report.ok and report.mode == "incremental" and report.entries_checked == 123
    assert report.head == TreeHead(3123, store.root())
    assert verify_tree(store, report.head).entries_checked == 0  # nothing new: only the frontier is read

    with superuser_tampering(engine) as conn:  # a new entry edited: its leaf no longer matches
        conn.execute(audit_entry.update().where(audit_entry.c.seq == 3050).values(patient_id="someone-else"))
    report = verify_tree(store, trusted)
    assert (report.problem.kind, report.problem.position) == ("tree_mismatch", 3050)

    with superuser_tampering(engine) as conn:  # the attacker rebuilds the whole tree over an edited old entry
        conn.execute(audit_entry.update().where(audit_entry.c.seq == 17).values(reason="rewritten"))
        _rebuild_tree(conn)
    report = verify_tree(store, trusted)
    assert report.problem.kind == "inconsistent" and "does not have the trusted root" in report.problem.message
    assert verify_tree(store).ok  # a full check alone cannot tell: only a trusted head catches a rebuilt tree


def test_incremental_verification_refuses_a_tree_shorter_than_the_trusted_head(engine):
    store = _grown_store(engine, 50)
    trusted = verify_tree(store).head
    with superuser_tampering(engine) as conn:  # the tail deleted from both, the tree rebuilt to match
        conn.execute(audit_entry.delete().where(audit_entry.c.seq > 45))
        _rebuild_tree(conn)
    assert verify_tree(store).ok
    report = verify_tree(store, trusted)
    assert (report.problem.kind, report.problem.position) == ("truncated", 46)
    forged = verify_tree(store, TreeHead(45, b"\x01" * 32))
    assert forged.problem.kind == "inconsistent"
