"""Several processes, each with several threads, append at once through their process's group commit
(as the portal's workers do): nothing lost, nothing duplicated, each caller's events in its own order,
and the Merkle tree and its signed checkpoints still verify. Runs against SQLite (file, WAL) and PostgreSQL."""
from __future__ import annotations

import multiprocessing
import threading

import pytest
import sqlalchemy as sa

from audit import AuditEvent, GroupCommit, SigningKey, SqlAuditStore, create_tables, verify_store
from audit.merkle import tree_hash

PROCESSES = 4
THREADS = 4
EVENTS_PER_THREAD = 125  # 2,000 appends in all
TOTAL = PROCESSES * THREADS * EVENTS_PER_THREAD

pytestmark = pytest.mark.slow


def _engine(url: str) -> sa.Engine:
    """Like the portal's engine: WAL on SQLite. Asynchronous commit on PostgreSQL only to keep the test fast."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
        return engine
    return sa.create_engine(url, connect_args={"options": "-c synchronous_commit=off"})


def _writer_process(url: str, key_pem: bytes, worker: int) -> None:
    store = GroupCommit(SqlAuditStore(_engine(url), SigningKey.from_pem(key_pem), checkpoint_every=32))
    errors: list[BaseException] = []

    def append_events(thread: int) -> None:
        try:
            for i in range(EVENTS_PER_THREAD):
                store.append(AuditEvent(action="chart.read", outcome="allowed", actor_id=f"w{worker}-t{thread}",
                                        details={"i": i}))
        except BaseException as exc:  # reported through the exit code below
            errors.append(exc)

    threads = [threading.Thread(target=append_events, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_concurrent_appends_from_processes_and_threads(database_url):
    key = SigningKey.generate()
    engine = _engine(database_url)
    create_tables(engine)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer_process, args=(database_url, key.private_pem(), w))
               for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    store = SqlAuditStore(engine, key, checkpoint_every=32)
    entries = list(store.iter_entries())
    assert store.count() == TOTAL
    assert [entry.seq for entry in entries] == list(range(1, TOTAL + 1))
    per_writer = {}
    for entry in entries:
        per_writer.setdefault(entry.event.actor_id, []).append(entry.event.details["i"])
    assert all(values == list(range(EVENTS_PER_THREAD)) for values in per_writer.values())
    assert len(per_writer) == PROCESSES * THREADS
    report = verify_store(store, key.verify_key)
    assert report.ok, report.problem
    sizes = [checkpoint.tree_size for checkpoint in store.tree_checkpoints()]
    assert set(range(32, TOTAL + 1, 32)) <= set(sizes)  # one at every multiple, whichever process crossed it
    assert report.checkpoints_checked == len(sizes)
    assert store.tree_size() == TOTAL and store.root() == tree_hash([entry.leaf_hash() for entry in entries])
    engine.dispose()
