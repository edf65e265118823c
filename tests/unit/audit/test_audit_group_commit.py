"""Group commit: concurrent callers share transactions, yet each gets exactly its own durable entries."""
from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from audit import AuditEvent, AuditWriteError, GroupCommit, SigningKey, SqlAuditStore, create_tables, verify_store

KEY = SigningKey.generate()


class CountingStore(SqlAuditStore):
    """A real SQLite store that counts its transactions and refuses any batch holding a poisoned event."""

    def __init__(self, engine: sa.Engine, fails_after: float = 0.0) -> None:
        super().__init__(engine, KEY, checkpoint_every=10)
        self.transactions = 0
        self.fails_after = fails_after

    def append_many(self, events):
        events = list(events)
        self.transactions += 1
        if self.fails_after:
            time.sleep(self.fails_after)
            raise AuditWriteError("audit event not recorded: no append lock within the timeout")
        if any(event.action == "poisoned" for event in events):
            raise AuditWriteError("audit event not recorded: refused by the database")
        return super().append_many(events)


@pytest.fixture
def store(tmp_path) -> CountingStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    create_tables(engine)
    return CountingStore(engine)


def _all_at_once(callers: int, work) -> list:
    start, results = threading.Barrier(callers), [None] * callers

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except AuditWriteError as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_simultaneous_callers_share_transactions_and_each_gets_its_own_entries(store):
    appender = GroupCommit(store)
    results = _all_at_once(40, lambda i: appender.append_many(
        [AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i}", details={"part": part})
         for part in range(3)]))
    for index, entries in enumerate(results):
        assert [entry.event.actor_id for entry in entries] == [f"u{index}"] * 3
        assert [entry.event.details["part"] for entry in entries] == [0, 1, 2]
        assert [entry.seq for entry in entries] == list(range(entries[0].seq, entries[0].seq + 3))
    assert sorted(entry.seq for entries in results for entry in entries) == list(range(1, 121))
    assert store.transactions < 40, "every caller paid for a transaction of its own"
    report = verify_store(store, KEY.verify_key)
    sizes = [checkpoint.tree_size for checkpoint in store.tree_checkpoints()]
    assert set(range(10, 121, 10)) <= set(sizes)  # one at every multiple of checkpoint_every, whatever the batches
    assert report.ok and report.entries_checked == 120 and report.checkpoints_checked == len(sizes)


def test_a_refused_event_fails_only_its_own_caller(store):
    appender = GroupCommit(store)
    results = _all_at_once(12, lambda i: appender.append(
        AuditEvent(action="poisoned" if i == 5 else "chart.read", outcome="allowed", actor_id=f"u{i}")))
    assert isinstance(results[5], AuditWriteError)
    assert sorted(result.event.actor_id for i, result in enumerate(results) if i != 5) == \
        sorted(f"u{i}" for i in range(12) if i != 5)
    assert store.count() == 11 and verify_store(store, KEY.verify_key).ok


def test_a_lone_caller_appends_at_once(store):
    appender = GroupCommit(store)
    entry = appender.append(AuditEvent(action="chart.read", outcome="allowed"))
    assert entry.seq == 1 and store.transactions == 1 and appender.append_many([]) == []


def test_a_batch_that_failed_after_waiting_fails_every_caller_at_once(tmp_path):
    """A held lock: retrying caller by caller would make the last one wait a timeout per caller ahead of it."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    create_tables(engine)
    store = CountingStore(engine, fails_after=0.2)
    appender = GroupCommit(store, retry_within=0.1)
    results = _all_at_once(8, lambda i: appender.append(AuditEvent(action="chart.read", outcome="allowed")))
    assert all(isinstance(result, AuditWriteError) for result in results)
    assert store.transactions < 8, "the callers of a failed batch were retried one by one"
