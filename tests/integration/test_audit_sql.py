"""SqlAuditStore on real SQLite and PostgreSQL: append-only guard, filters, and tamper detection."""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from audit import (
    AuditEvent,
    AuditFilter,
    AuditWriteError,
    Checkpoint,
    Entry,
    SigningKey,
    SqlAuditStore,
    audit_checkpoint,
    audit_entry,
    create_tables,
    install_append_only_guard,
    remove_append_only_guard,
    verify_store,
)
from audit.store import entry_to_row

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
            conn.exec_driver_sql("ALTER TABLE audit_entry DISABLE TRIGGER ALL")
            conn.exec_driver_sql("ALTER TABLE audit_checkpoint DISABLE TRIGGER ALL")
        else:
            remove_append_only_guard(conn)
        yield conn
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_entry ENABLE TRIGGER ALL")
            conn.exec_driver_sql("ALTER TABLE audit_checkpoint ENABLE TRIGGER ALL")
        else:
            install_append_only_guard(conn)


def _row(conn: sa.Connection, seq: int) -> sa.Row:
    return conn.execute(sa.select(audit_entry).where(audit_entry.c.seq == seq)).one()


def test_appends_chain_checkpoint_and_verify(store):
    assert store.count() == 250 and store.head()[0] == 250
    assert [c.count for c in store.iter_checkpoints()] == [100, 200]
    entry = store.append(_event(250))
    assert entry.seq == 251 and entry.prev_hash != entry.entry_hash
    assert store.checkpoint().count == 251
    report = verify_store(store, KEY.verify_key)
    assert report.ok and report.entries_checked == 251 and report.checkpoints_checked == 3


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
    "UPDATE audit_checkpoint SET count = 1",
    "DELETE FROM audit_checkpoint",
)


def test_append_only_guard_rejects_changes(engine, store):
    statements = GUARDED_STATEMENTS
    if engine.dialect.name == "postgresql":
        statements += ("TRUNCATE audit_entry", "TRUNCATE audit_checkpoint")
    for statement in statements:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
    assert verify_store(store, KEY.verify_key).ok


def _edit(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.update().where(audit_entry.c.seq == 57).values(patient_id="p-other"))


def _edit_and_rehash(conn: sa.Connection, store: SqlAuditStore) -> None:
    original = Entry(**_row_entry_fields(conn, 57))
    event = AuditEvent.from_dict({**original.event.to_dict(), "outcome": "allowed", "actor_id": "nobody"})
    rewritten = Entry.create(57, original.prev_hash, event)
    conn.execute(audit_entry.update().where(audit_entry.c.seq == 57).values(entry_to_row(rewritten)))


def _row_entry_fields(conn: sa.Connection, seq: int) -> dict:
    row = _row(conn, seq)._asdict()
    event = AuditEvent(**{name: row[name] for name in AuditEvent.__dataclass_fields__ if name != "details"},
                       details=json.loads(row["details"]))
    return {"seq": seq, "event": event, "prev_hash": row["prev_hash"], "entry_hash": row["entry_hash"]}


def _delete(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.delete().where(audit_entry.c.seq == 57))


def _insert_forged(conn: sa.Connection, store: SqlAuditStore) -> None:
    event = AuditEvent(action="chart.read", outcome="allowed", actor_id="mallory", patient_id="p1")
    conn.execute(audit_entry.insert().values(entry_to_row(Entry.create(251, secrets.token_hex(32), event))))


def _swap(conn: sa.Connection, store: SqlAuditStore) -> None:
    first, second = _row(conn, 57)._asdict(), _row(conn, 58)._asdict()
    conn.execute(audit_entry.delete().where(audit_entry.c.seq.in_([57, 58])))
    conn.execute(audit_entry.insert(), [{**second, "seq": 57}, {**first, "seq": 58}])


def _truncate(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_entry.delete().where(audit_entry.c.seq > 150))


def _forge_checkpoint(conn: sa.Connection, store: SqlAuditStore) -> None:
    forged = Checkpoint.sign(200, "f" * 64, SigningKey.generate())
    conn.execute(audit_checkpoint.update().where(audit_checkpoint.c.count == 200)
                 .values(signature=forged.signature, public_key=forged.public_key))


def _move_checkpoint(conn: sa.Connection, store: SqlAuditStore) -> None:
    conn.execute(audit_checkpoint.update().where(audit_checkpoint.c.count == 200).values(head_hash="f" * 64))


TAMPERING = (
    (_edit, "edited", 57),
    (_edit_and_rehash, "edited", 57),
    (_delete, "deleted", 57),
    (_insert_forged, "inserted", 251),
    (_swap, "reordered", 57),
    (_truncate, "truncated", 151),
    (_forge_checkpoint, "bad_checkpoint_signature", 200),
    (_move_checkpoint, "bad_checkpoint_signature", 200),
)


def _fresh_store(engine: sa.Engine) -> SqlAuditStore:
    with tampering(engine) as conn:
        conn.execute(audit_entry.delete())
        conn.execute(audit_checkpoint.delete())
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


def test_writes_fail_closed(engine):
    store = SqlAuditStore(engine, KEY)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_entry")
    with pytest.raises(AuditWriteError):
        store.append(_event(1))
    with pytest.raises(AuditWriteError, match="read-only"):
        SqlAuditStore(engine, None).append(_event(1))
