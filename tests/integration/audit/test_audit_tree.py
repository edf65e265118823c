"""The audit log's Merkle tree in a real database (SQLite and PostgreSQL): written with the entries,
built by the migrations for an existing log (and the old hash chain retired into it), and proved from
the command line."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from audit import (
    AuditWriteError,
    Entry,
    JsonlAuditStore,
    SigningKey,
    SqlAuditStore,
    audit_entry,
    audit_tree_node,
    create_tables,
    install_append_only_guard,
    load_signing_key,
    remove_append_only_guard,
    verify_store,
)
from audit import tree as tree_module
from audit.merkle import consistency_proof, leaf_hash, tree_hash, verify_consistency, verify_inclusion
from audit.note import NoteSigner, open_checkpoint
from audit.tree import build_tree
from audit.tree_checkpoints import CHAIN_HEAD_EXTENSION, note_body
from portal.migrate import upgrade
from tests.support.audit_events import numbered_event
from tests.support.legacy_chain import chain_hash, insert_chain, legacy_entry
from tests.support.portal_server import ROOT, flask_command, portal_env

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules

KEY = SigningKey.generate()


def _assert_tree_matches_entries(store: SqlAuditStore | JsonlAuditStore, *sizes: int) -> dict[int, bytes]:
    """Roots and proofs at a spread of sizes (plus `sizes`) agree with the tree computed in memory."""
    leaves = [entry.leaf_hash() for entry in store.iter_entries()]
    total = len(leaves)
    assert store.tree_size() == total
    checked = {size for size in (1, 2, 3, 5, 8, 13, total // 3, total // 2, total - 1, total, *sizes) if 0 < size <= total}
    roots = {size: tree_hash(leaves[:size]) for size in sorted(checked)}
    for size, expected in roots.items():
        assert store.root(size) == expected
        for index in {0, size // 3, size // 2, size - 1}:
            verify_inclusion(index, size, leaves[index], store.inclusion_proof(index, size), expected)
        for old in (old for old in roots if old <= size):
            verify_consistency(old, size, store.consistency_proof(old, size), roots[old], expected)
    return roots


def test_every_append_writes_the_tree_hashes_its_entries_complete(engine):
    create_tables(engine)
    store = SqlAuditStore(engine, KEY, checkpoint_every=10)
    assert store.tree_size() == 0 and store.root() == tree_hash([])
    i = 0
    for batch in (1, 1, 5, 1, 16, 3, 40, 1):
        store.append_many(numbered_event(i + n) for n in range(batch))
        i += batch
    assert store.count() == store.tree_size() == 68
    _assert_tree_matches_entries(store)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(audit_tree_node)).scalar_one()
    assert stored == 2 * 68 - bin(68).count("1")  # every complete subtree once, nothing more
    store.probe_append()
    assert store.tree_size() == 68


def test_proofs_name_a_tree_size_the_log_does_not_have(engine):
    create_tables(engine)
    store = SqlAuditStore(engine, KEY)
    store.append_many(numbered_event(i) for i in range(5))
    with pytest.raises(ValueError, match="has 5 entries, so no tree of size 6"):
        store.inclusion_proof(0, 6)
    with pytest.raises(ValueError, match="leaf index 5 is not in a tree of 5"):
        store.inclusion_proof(5, 5)
    with pytest.raises(ValueError, match="no tree of size 9"):
        store.consistency_proof(2, 9)
    with pytest.raises(ValueError, match="from size 4 to size 3"):
        store.consistency_proof(4, 3)


def test_a_file_store_proves_exactly_what_the_database_store_proves(engine, tmp_path):
    create_tables(engine)
    sql = SqlAuditStore(engine, KEY)
    jsonl = JsonlAuditStore(tmp_path / "audit.jsonl", KEY, fsync=False)
    for store in (sql, jsonl):
        store.append_many(numbered_event(i) for i in range(13))
        store.append(numbered_event(13))
    assert jsonl.tree_size() == sql.tree_size() == 14
    assert _assert_tree_matches_entries(jsonl) == _assert_tree_matches_entries(sql)
    assert jsonl.inclusion_proof(9, 14) == sql.inclusion_proof(9, 14)
    assert jsonl.consistency_proof(6, 14) == sql.consistency_proof(6, 14)


ORIGIN = "portal.example/audit"


def _insert_chain(engine: sa.Engine, count: int) -> list[Entry]:
    """Entries as the portal wrote them before the tree existed: a hash chain, checkpoints every 100, nothing else."""
    events = [numbered_event(seq) for seq in range(1, count + 1)]
    with engine.begin() as conn:
        insert_chain(conn, events, KEY)
    return [Entry(seq, event) for seq, event in enumerate(events, start=1)]


def test_the_migration_builds_the_tree_of_an_existing_log_in_order(engine, database_url):
    upgrade(database_url, "0004")
    entries = _insert_chain(engine, 1234)
    upgrade(database_url, "head", audit_signing_key=KEY, audit_log_origin=ORIGIN)
    store = SqlAuditStore(engine, KEY, origin=ORIGIN)
    assert store.tree_size() == 1234
    assert store.root() == tree_hash([leaf_hash(entry.leaf_data()) for entry in entries])
    store.append_many(numbered_event(i) for i in range(1234, 1300))  # and the log grows on from there
    roots = _assert_tree_matches_entries(store, 1234, 1235)
    with engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.execute(audit_tree_node.delete())  # the migration guarded the new table too
    assert roots[1234] == tree_hash([entry.leaf_hash() for entry in entries])


def test_the_migration_refuses_a_log_with_a_gap(engine, database_url):
    upgrade(database_url, "0004")
    _insert_chain(engine, 20)
    with engine.begin() as conn:
        remove_append_only_guard(conn, ("audit_entry", "audit_checkpoint"))
        conn.execute(audit_entry.delete().where(audit_entry.c.seq == 7))
        install_append_only_guard(conn, ("audit_entry", "audit_checkpoint"))
    with pytest.raises(Exception, match="seq 8 cannot be leaf 6"):
        upgrade(database_url, "head", audit_signing_key=KEY, audit_log_origin=ORIGIN)


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns(table)}


def test_the_chain_is_imported_into_the_tree_its_heads_signed_into_tree_checkpoints_and_dropped(engine, database_url):
    """A log at revision 0006 whose tree lags its chain (entries appended by a version that kept only the chain)."""
    upgrade(database_url, "0006")
    events = [numbered_event(seq) for seq in range(1, 251)]
    with engine.begin() as conn:
        head_hash = insert_chain(conn, events[:120], KEY)
        assert build_tree(conn) == 120
        head_hash = insert_chain(conn, events[120:], KEY, head=(120, head_hash))
    upgrade(database_url, "head", audit_signing_key=KEY, audit_log_origin=ORIGIN)

    assert "audit_checkpoint" not in sa.inspect(engine).get_table_names()
    assert not {"prev_hash", "entry_hash"} & _columns(engine, "audit_entry")
    store = SqlAuditStore(engine, KEY, origin=ORIGIN, checkpoint_every=100)
    leaves = [Entry(seq, event).leaf_hash() for seq, event in enumerate(events, start=1)]
    assert (store.tree_size(), store.root()) == (250, tree_hash(leaves))
    signer = NoteSigner(ORIGIN, KEY)
    signed = {}
    for checkpoint in store.tree_checkpoints():
        body, _ = open_checkpoint(checkpoint.note, [signer.verifier], origin=ORIGIN)
        assert body.root_hash == tree_hash(leaves[:body.size])
        signed[body.size] = body.extensions
    prev, heads = "0" * 64, {}
    for seq, event in enumerate(events, start=1):
        prev = heads[seq] = chain_hash(seq, prev, event)
    assert heads[250] == head_hash
    assert signed == {size: (f"{CHAIN_HEAD_EXTENSION} {size} {heads[size]}",) for size in (100, 200, 250)}
    assert verify_store(store, KEY.verify_key).ok  # the tree checkpoints stand where the chain's did
    store.append_many(numbered_event(seq) for seq in range(251, 340))
    report = verify_store(store, KEY.verify_key)
    assert report.ok and report.entries_checked == 339
    with engine.begin() as conn, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        conn.execute(audit_entry.update().values(reason="x"))  # the guard survived the table's rebuild


def test_the_migration_refuses_to_retire_a_chain_that_does_not_verify(engine, database_url):
    upgrade(database_url, "0006")
    with engine.begin() as conn:
        insert_chain(conn, [numbered_event(seq) for seq in range(1, 40)], KEY)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # a superuser's triggers off
        else:
            remove_append_only_guard(conn, ("audit_entry",))
        conn.execute(legacy_entry.update().where(legacy_entry.c.seq == 17).values(reason="rewritten"))
    with pytest.raises(Exception, match="audit entry 17 does not match its chain hash"):
        upgrade(database_url, "head", audit_signing_key=KEY, audit_log_origin=ORIGIN)
    assert {"prev_hash", "entry_hash"} <= _columns(engine, "audit_entry")  # nothing was dropped


def _audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _b64s(values: list[str]) -> list[bytes]:
    return [base64.b64decode(value) for value in values]


def test_the_cli_prints_proofs_an_independent_verifier_accepts(engine, database_url, tmp_path):
    create_tables(engine)
    store = SqlAuditStore(engine, KEY)
    store.append_many(numbered_event(i) for i in range(21))
    inclusion = _audit_cli("prove-inclusion", "--db", database_url, "--index", "12", "--size", "20")
    assert inclusion.returncode == 0, inclusion.stderr
    proof = json.loads(inclusion.stdout)
    assert (proof["tree_size"], proof["leaf_index"], proof["entry"]["seq"]) == (20, 12, 13)
    leaf = base64.b64decode(proof["leaf_hash"])
    assert leaf == leaf_hash(json.dumps(proof["entry"], sort_keys=True, separators=(",", ":")).encode())
    verify_inclusion(12, 20, leaf, _b64s(proof["inclusion_path"]), base64.b64decode(proof["root_hash"]))

    consistency = _audit_cli("prove-consistency", "--db", database_url, "--old", "7")
    assert consistency.returncode == 0, consistency.stderr
    proof = json.loads(consistency.stdout)
    assert (proof["tree_size_1"], proof["tree_size_2"]) == (7, 21)
    verify_consistency(7, 21, _b64s(proof["consistency_path"]), base64.b64decode(proof["root_hash_1"]),
                       base64.b64decode(proof["root_hash_2"]))
    assert _b64s(proof["consistency_path"]) == consistency_proof(7, 21, store.stored_hashes)

    check_proofs_offline(tmp_path, inclusion.stdout, consistency.stdout)

    incremental = _audit_cli("verify", "--db", database_url, "--since-size", "7", "--since-root", proof["root_hash_1"])
    assert incremental.returncode == 0, incremental.stdout + incremental.stderr
    assert incremental.stdout.startswith(f"OK: tree intact (incremental, size 21, root {proof['root_hash_2']}, 14 entries")
    forged = _audit_cli("verify", "--db", database_url, "--since-size", "7", "--since-root", proof["root_hash_2"])
    assert forged.returncode == 1 and forged.stdout.startswith("FAILED: inconsistent at position 7")
    unusable = _audit_cli("verify", "--db", database_url, "--since-size", "7", "--since-root", "not base64!")
    assert unusable.returncode == 2 and "error:" in unusable.stderr


def check_proofs_offline(tmp_path, inclusion_json: str, consistency_json: str) -> None:
    """What an auditor holding the files and a checkpoint's tree heads can check without the database."""
    inclusion, consistency = json.loads(inclusion_json), json.loads(consistency_json)
    included, consistent = tmp_path / "inclusion.json", tmp_path / "consistency.json"
    included.write_text(inclusion_json)
    consistent.write_text(consistency_json)
    tree = f"{inclusion['tree_size']}:{inclusion['root_hash']}"
    old, new = (f"{consistency[f'tree_size_{n}']}:{consistency[f'root_hash_{n}']}" for n in (1, 2))

    pinned = _audit_cli("check-inclusion", str(included), "--tree", tree)
    assert pinned.returncode == 0 and pinned.stdout.startswith("OK: entry seq 13 is in the tree of 20 entries")
    assert pinned.stderr == ""
    unpinned = _audit_cli("check-inclusion", str(included))
    assert unpinned.returncode == 0 and "taken from the proof file itself" in unpinned.stderr
    assert _audit_cli("check-consistency", str(consistent), "--old", old, "--new", new).returncode == 0
    forked = _audit_cli("check-consistency", str(consistent), "--old", old, "--new", tree)
    assert forked.returncode == 1 and "tampered: tree_size_2 21 is not the trusted tree size 20" in forked.stderr

    inclusion["entry"]["event"]["patient_id"] = "someone-else"
    included.write_text(json.dumps(inclusion))
    edited = _audit_cli("check-inclusion", str(included), "--tree", tree)
    assert edited.returncode == 1 and "the entry does not hash to leaf_hash" in edited.stderr
    included.write_text(inclusion_json[:-20])
    truncated = _audit_cli("check-inclusion", str(included), "--tree", tree)
    assert truncated.returncode == 2 and "error: not JSON" in truncated.stderr


def test_the_cli_exits_2_for_sizes_the_log_lacks_and_1_for_an_entry_its_leaf_does_not_match(engine, database_url):
    create_tables(engine)
    SqlAuditStore(engine, KEY).append_many(numbered_event(i) for i in range(4))
    beyond = _audit_cli("prove-inclusion", "--db", database_url, "--index", "2", "--size", "5")
    assert beyond.returncode == 2 and "no tree of size 5" in beyond.stderr
    backwards = _audit_cli("prove-consistency", "--db", database_url, "--old", "4", "--new", "3")
    assert backwards.returncode == 2 and "from size 4 to size 3" in backwards.stderr
    with engine.begin() as conn:
        remove_append_only_guard(conn)  # an attacker with the database edits an entry, not its leaf hash
        conn.execute(audit_entry.update().where(audit_entry.c.seq == 3).values(patient_id="someone-else"))
        install_append_only_guard(conn)
    edited = _audit_cli("prove-inclusion", "--db", database_url, "--index", "2")
    assert edited.returncode == 1 and "not the hash of entry seq 3" in edited.stderr


def test_appends_stop_when_the_tree_remembers_entries_that_were_deleted(engine):
    create_tables(engine)
    store = SqlAuditStore(engine, KEY)
    store.append_many(numbered_event(i) for i in range(9))
    with engine.begin() as conn:
        remove_append_only_guard(conn)  # the tail deleted from the entries, not from the tree
        conn.execute(audit_entry.delete().where(audit_entry.c.seq > 6))
        install_append_only_guard(conn)
    with pytest.raises(AuditWriteError, match="already has a leaf at index 6 but the log has 6 entries"):
        store.append(numbered_event(9))
    assert store.count() == 6 and store.tree_size() == 9


def test_the_append_s_frontier_lookup_searches_the_primary_key_instead_of_scanning_the_table(tmp_path):
    """Every append reads its frontier: a table scan there made appends O(n) (a row-value IN list does that
    on SQLite), so the plan must be index searches only."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    create_tables(engine)
    statement = tree_module._lookup(3).compile(engine)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(range(6))).all()
    details = [row[-1] for row in plan]
    assert any("SEARCH audit_tree_node USING INDEX" in detail for detail in details), details
    assert not any(detail.startswith("SCAN") for detail in details), details
    engine.dispose()


def test_flask_init_db_retires_the_chain_with_the_portal_s_own_key_and_origin(engine, database_url, tmp_path):
    upgrade(database_url, "0006")
    env = portal_env(tmp_path, database_url, port=5000)
    key = load_signing_key(env["PORTAL_AUDIT_SIGNING_KEY"])
    events = [numbered_event(seq) for seq in range(1, 151)]
    with engine.begin() as conn:
        head_hash = insert_chain(conn, events, key)
    assert "migrated" in flask_command(env, "init-db")
    store = SqlAuditStore(engine, key, checkpoint_every=100)
    bodies = [note_body(checkpoint.note) for checkpoint in store.tree_checkpoints()]
    assert {body.origin for body in bodies} == {"127.0.0.1/audit"}
    assert [(body.size, body.extensions) for body in bodies][-1] == (150, (f"{CHAIN_HEAD_EXTENSION} 150 {head_hash}",))
    assert verify_store(store, key.verify_key).ok
