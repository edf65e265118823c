"""SqlAuditStore on real SQLite and PostgreSQL: append-only guard, filters, and tamper detection."""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from audit import (
    AuditEvent,
    AuditFilter,
    AuditWriteError,
    Entry,
    SigningKey,
    SqlAuditStore,
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_node,
    create_tables,
    install_append_only_guard,
    remove_append_only_guard,
    verify_store,
)
from audit import tree as tree_module
from audit.note import NoteSigner
from audit.schema import AUDIT_TABLES
from audit.store import ADVISORY_LOCK_KEY, DEFAULT_ORIGIN, entry_to_row
from audit.tree import build_tree
from audit.tree_checkpoints import sign_note

KEY = SigningKey.generate()
START = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _event(i: int) -> AuditEvent:
    return AuditEvent(action="chart.read" if i % 3 else "signin.failure", outcome="denied" if i % 5 == 0 else "allowed",
                      actor_id=f"u{i % 4}", patient_id=f"p{i % 7}", details={"results": i},
                      time=START + timedelta(minutes=i))


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine) -> SqlAuditStore:
    store = SqlAuditStore(engine, KEY, checkpoint_every=100)
    for start in range(0, 250, 50):
        store.append_many(_event(i) for i in range(start, start + 50))
    return store


@contextmanager
def tampering(engine: sa.Engine) -> Iterator[sa.Connection]:
    """What an attacker with database rights must do first: switch the append-only guard off."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for table in AUDIT_TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        else:
            remove_append_only_guard(conn)
        yield conn
        if conn.dialect.name == "postgresql":
            for table in AUDIT_TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
        else:
            install_append_only_guard(conn)


def _row(conn: sa.Connection, seq: int) -> sa.Row:
    return conn.execute(sa.select(audit_entry).where(audit_entry.c.seq == seq)).one()


def test_appends_sign_tree_checkpoints_and_verify(store):
    assert store.count() == store.tree_size() == 250 and store.head_seq() == 250
    assert {100, 200} <= {c.tree_size for c in store.tree_checkpoints()}  # and the first append's, by time
    entry = store.append(_event(250))
    assert entry.seq == 251 and store.leaf_hash(250) == entry.leaf_hash()
    assert store.sign_tree_checkpoint().tree_size == 251
    report = verify_store(store, KEY.verify_key)
    assert report.ok and report.entries_checked == 251 and report.checkpoints_checked == len(store.tree_checkpoints())
    assert (report.tree.size, report.tree.root) == (251, store.root())


def test_filters_run_in_sql(store):
    only = AuditFilter(actor_id="u1", outcome="allowed", since=START + timedelta(minutes=10),
                       until=START + timedelta(minutes=100))
    got = list(store.iter_entries(filter=only))
    expected = [i + 1 for i in range(10, 100) if i % 4 == 1 and i % 5 != 0]
    assert [e.seq for e in got] == expected
    assert [e.seq for e in store.iter_entries(after_seq=248)] == [249, 250]
    assert got[0].event == _event(got[0].seq - 1)


GUARDED_STATEMENTS = (
    "UPDATE audit_entry SET actor_id = 'x' WHERE seq = 3",
    "DELETE FROM audit_entry WHERE seq = 250",
    "UPDATE audit_tree_checkpoint SET tree_size = 1",
    "DELETE FROM audit_tree_checkpoint",
    "UPDATE audit_tree_node SET hash = hash WHERE level = 0",
    "DELETE FROM audit_tree_node WHERE level = 1",
)


def test_append_only_guard_rejects_changes(engine, store):
    statements = GUARDED_STATEMENTS
    if engine.dialect.name == "postgresql":
        statements += ("TRUNCATE audit_entry", "TRUNCATE audit_tree_checkpoint", "TRUNCATE audit_tree_node")
    for statement in statements:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
    assert verify_store(store, KEY.verify_key).ok


def _edit(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.update().where(audit_entry.c.seq == 57).values(patient_id="p-other"))


def _edit_and_rehash_its_leaf(conn: sa.Connection, store: SqlAuditStore) -> None:
    """The entry and its stored leaf rewritten; the nodes above the leaf no longer match."""
    original = _row_entry(conn, 57)
    rewritten = Entry(57, AuditEvent.from_dict({**original.event.to_dict(), "outcome": "allowed", "actor_id": "nobody"}))
    conn.execute(audit_entry.update().where(audit_entry.c.seq == 57).values(entry_to_row(rewritten)))
    conn.execute(audit_tree_node.update().where(audit_tree_node.c.level == 0, audit_tree_node.c.idx == 56)
                 .values(hash=rewritten.leaf_hash()))


def _edit_and_rebuild_the_tree(conn: sa.Connection, store: SqlAuditStore) -> None:
    """The entry rewritten and the whole tree rebuilt over it: only the signed checkpoints remember the old root."""
    original = _row_entry(conn, 57)
    rewritten = Entry(57, AuditEvent.from_dict({**original.event.to_dict(), "outcome": "allowed", "actor_id": "nobody"}))
    conn.execute(audit_entry.update().where(audit_entry.c.seq == 57).values(entry_to_row(rewritten)))
    _rebuild_tree(conn)


def _rebuild_tree(conn: sa.Connection) -> None:
    conn.execute(audit_tree_node.delete())
    build_tree(conn)


def _row_entry(conn: sa.Connection, seq: int) -> Entry:
    row = _row(conn, seq)._asdict()
    event = AuditEvent(**{name: row[name] for name in AuditEvent.__dataclass_fields__ if name != "details"},
                       details=json.loads(row["details"]))
    return Entry(seq, event)


def _delete(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.delete().where(audit_entry.c.seq == 57))


def _insert_forged(conn: sa.Connection, store: SqlAuditStore) -> None:
    event = AuditEvent(action="chart.read", outcome="allowed", actor_id="mallory", patient_id="p1")
    conn.execute(audit_entry.insert().values(entry_to_row(Entry(251, event))))


def _swap(conn: sa.Connection, store: SqlAuditStore) -> None:
    first, second = _row(conn, 57)._asdict(), _row(conn, 58)._asdict()
    conn.execute(audit_entry.delete().where(audit_entry.c.seq.in_([57, 58])))
    conn.execute(audit_entry.insert(), [{**second, "seq": 57}, {**first, "seq": 58}])


def _truncate(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.delete().where(audit_entry.c.seq > 150))


def _checkpoint_200(conn: sa.Connection) -> sa.Row:
    return conn.execute(sa.select(audit_tree_checkpoint).where(audit_tree_checkpoint.c.tree_size == 200)).one()


def _forge_checkpoint(conn: sa.Connection, store: SqlAuditStore) -> None:
    mallory = NoteSigner(DEFAULT_ORIGIN, SigningKey.generate())
    conn.execute(audit_tree_checkpoint.update().where(audit_tree_checkpoint.c.tree_size == 200)
                 .values(note=sign_note(mallory, 200, bytes(_checkpoint_200(conn).root_hash))))


def _move_checkpoint(conn: sa.Connection, store: SqlAuditStore) -> None:
    """The signed note's root replaced by another (and the row's copy of it): the signature no longer covers it."""
    row = _checkpoint_200(conn)
    root, other = (base64.b64encode(digest).decode() for digest in (bytes(row.root_hash), b"\xff" * 32))
    conn.execute(audit_tree_checkpoint.update().where(audit_tree_checkpoint.c.tree_size == 200)
                 .values(note=row.note.replace(root, other), root_hash=b"\xff" * 32))


def _delete_checkpoints(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_tree_checkpoint.delete())


def _delete_one_checkpoint(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_tree_checkpoint.delete().where(audit_tree_checkpoint.c.tree_size == 200))


def _delete_checkpoints_then_remove_and_rehash(conn: sa.Connection, store: SqlAuditStore) -> None:
    """With the checkpoints gone, seq 57 is removed, every later entry renumbered and the tree rebuilt."""
    conn.execute(audit_tree_checkpoint.delete())
    later = [_row_entry(conn, seq) for seq in range(58, 251)]
    conn.execute(audit_entry.delete().where(audit_entry.c.seq >= 57))
    conn.execute(audit_entry.insert(), [entry_to_row(Entry(seq, entry.event)) for seq, entry in enumerate(later, 57)])
    _rebuild_tree(conn)


TAMPERING = (
    (_edit, "edited", 57),
    (_edit_and_rehash_its_leaf, "tree_mismatch", 57),
    (_edit_and_rebuild_the_tree, "checkpoint_mismatch", 100),
    (_delete, "deleted", 57),
    (_insert_forged, "inserted", 251),
    (_swap, "reordered", 57),
    (_truncate, "truncated", 151),
    (_forge_checkpoint, "bad_checkpoint_signature", 200),
    (_move_checkpoint, "bad_checkpoint_signature", 200),
    (_delete_checkpoints, "checkpoint_missing", 100),
    (_delete_one_checkpoint, "checkpoint_missing", 200),
    (_delete_checkpoints_then_remove_and_rehash, "checkpoint_missing", 100),
)


def _fresh_store(engine: sa.Engine) -> SqlAuditStore:
    with tampering(engine) as conn:
        conn.execute(audit_entry.delete())
        conn.execute(audit_tree_checkpoint.delete())
        conn.execute(audit_tree_node.delete())
    store = SqlAuditStore(engine, KEY, checkpoint_every=100)
    for start in range(0, 250, 50):
        store.append_many(_event(i) for i in range(start, start + 50))
    return store


def test_tampering_is_detected_classified_and_located(engine):
    """One database for every scenario (creating databases dominates the run time)."""
    wrong = []
    for tamper, kind, position in TAMPERING:
        store = _fresh_store(engine)
        assert verify_store(store, KEY.verify_key).ok
        with tampering(engine) as conn:
            tamper(conn, store)
        problem = verify_store(store, KEY.verify_key).problem
        if problem is None or (problem.kind, problem.position) != (kind, position):
            wrong.append(f"{tamper.__name__}: expected {kind} at {position}, got {problem}")
    assert not wrong


def test_a_row_slipped_in_below_seq_1_fails_verification(engine, store):
    """A walk from seq 1 never meets it, yet searches and reports would show it: the count gives it away."""
    with tampering(engine) as conn:
        conn.execute(audit_entry.insert(), {**dict(_row(conn, 7)._mapping), "seq": 0})
    report = verify_store(store, KEY.verify_key)
    assert not report.ok and report.problem.kind == "inserted"
    assert "1 rows outside the tree" in report.problem.message


def test_writes_fail_closed(engine):
    store = SqlAuditStore(engine, KEY)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_entry")
    with pytest.raises(AuditWriteError):
        store.append(_event(1))
    with pytest.raises(AuditWriteError, match="read-only"):
        SqlAuditStore(engine, None).append(_event(1))


# --------------------------------------------------------------------------- write probe and lock waits

REFUSE_INSERTS = {
    "postgresql": (
        "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'inserts refused'; END $$",
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
    ),
    "sqlite": ("CREATE TRIGGER refuse_insert BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'inserts refused'); END",),
}
ALLOW_INSERTS = {
    "postgresql": ("DROP TRIGGER refuse_insert ON {table}", "DROP FUNCTION refuse_insert()"),
    "sqlite": ("DROP TRIGGER refuse_insert",),
}


def _run_ddl(engine: sa.Engine, statements: dict[str, tuple[str, ...]], table: str) -> None:
    with engine.begin() as conn:
        for statement in statements[engine.dialect.name]:
            conn.exec_driver_sql(statement.format(table=table))


def test_an_append_whose_tree_hashes_cannot_be_written_keeps_none_of_its_entries(engine, store):
    """The entries and the Merkle hashes they complete commit in one transaction, or neither does."""
    head, size, root = store.head_seq(), store.tree_size(), store.root()
    _run_ddl(engine, REFUSE_INSERTS, "audit_tree_node")
    try:
        with pytest.raises(AuditWriteError, match="inserts refused"):
            store.append_many(_event(i) for i in range(250, 260))
    finally:
        _run_ddl(engine, ALLOW_INSERTS, "audit_tree_node")
    assert (store.head_seq(), store.count(), store.tree_size(), store.root()) == (head, 250, size, root)
    store.append_many(_event(i) for i in range(250, 260))
    assert store.count() == store.tree_size() == 260 and verify_store(store, KEY.verify_key).ok


@pytest.mark.parametrize("table", ["audit_entry", "audit_tree_checkpoint", "audit_tree_node"])
def test_the_write_probe_fails_like_an_append_and_keeps_nothing(engine, store, table):
    head, checkpoints = store.head_seq(), store.tree_checkpoints()
    store.probe_append()
    assert store.head_seq() == head and store.tree_checkpoints() == checkpoints
    _run_ddl(engine, REFUSE_INSERTS, table)
    try:
        with pytest.raises(AuditWriteError, match="inserts refused"):
            store.probe_append()  # a checkpoint is signed only every 100th entry: the probe tries every table
    finally:
        _run_ddl(engine, ALLOW_INSERTS, table)
    store.probe_append()
    assert store.head_seq() == head and verify_store(store, KEY.verify_key).ok


@contextmanager
def append_lock_held(engine: sa.Engine) -> Iterator[None]:
    """Another connection holds what every append needs: the advisory lock, or SQLite's write lock."""
    holder = engine.connect()
    try:
        if engine.dialect.name == "postgresql":
            holder.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK_KEY)))
        else:
            holder.exec_driver_sql("BEGIN IMMEDIATE")
        yield
    finally:
        holder.rollback()
        if engine.dialect.name == "postgresql":
            holder.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
        holder.close()


def test_an_append_waits_a_bounded_time_for_its_lock_then_fails_closed(engine):
    store = SqlAuditStore(engine, KEY, lock_timeout=0.5)
    failures: list[Exception] = []

    def append() -> None:
        try:
            store.append(_event(1))
        except AuditWriteError as exc:
            failures.append(exc)

    with append_lock_held(engine):
        # Two writers: one waits for the database's lock, the other for this process's lock behind it.
        writers = [threading.Thread(target=append) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        with pytest.raises(AuditWriteError):
            store.probe_append()
    assert len(failures) == 2 and store.count() == 0
    assert store.append(_event(1)).seq == 1


def test_full_verification_s_quick_leaf_is_the_exact_leaf_of_every_row_the_store_writes(engine):
    """Verification hashes rows as text, without parsing details or building datetimes; for every row the store
    writes (nulls, quotes, backslashes, non-ASCII, escaped control characters, zero microseconds) that must
    give the entry's own leaf hash, or each row would take the slow exact path."""
    store = SqlAuditStore(engine, KEY)
    events = [
        AuditEvent.create(action="chart.read", outcome="allowed", actor_id='dr "quoted"', actor_role="clinician",
                          patient_id="p\\1", reason="café \u2014 ok", user_agent="a\x00b\tc", source_ip="10.0.0.1",
                          request_id="r-1", session_hash="s" * 64, resource_type="Observation", resource_id="o-1",
                          details={"results": 3, "note": 'say "hi"', "flag": True}, time=START),
        AuditEvent(action="signin.failure", outcome="denied", time=START + timedelta(seconds=1)),
    ]
    entries = store.append_many(events)
    items = [item for page in tree_module.leaf_pages(engine, 2) for item in page]
    assert [tree_module._quick_leaf_hash(item[4]) for item in items] == [entry.leaf_hash() for entry in entries]
    assert [tree_module.row_entry(item[4]) for item in items] == entries
