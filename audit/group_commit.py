"""Group commit: appends from many threads (or green threads) of one process share one transaction.

A request's audit entry must be durable before the request is answered, so every request pays for a
transaction: a connection, the cross-process append lock, reading the head, the INSERT and the COMMIT.
Under load most of that is waiting for the lock that the other requests hold. Here the first caller to
arrive becomes the leader and appends what every caller queued meanwhile in one ``append_many``; each
caller returns only when the transaction holding its own events has committed, so "answered only after
its entry is durable" holds exactly as before, and the log's order and checkpoints are the store's.

When a batch is refused at once, each caller's events are tried again on their own, so one refused event
(a trigger, a constraint) fails only its own request, never its neighbours'. A batch that failed only after
waiting (a held lock, an unreachable database) fails all its callers together: retried one by one, the
last caller would wait a lock timeout per caller ahead of it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from audit.entries import Entry
from audit.errors import AuditWriteError
from audit.events import AuditEvent
from audit.store import AuditStore


class _Waiter:
    __slots__ = ("events", "done", "entries", "error", "leads")

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events
        self.done = threading.Event()
        self.entries: list[Entry] = []
        self.error: BaseException | None = None
        self.leads = False


class GroupCommit:
    """``append_many`` with the events of concurrent callers batched into one store transaction."""

    def __init__(self, store: AuditStore, max_batch_events: int = 500, retry_within: float = 5.0) -> None:
        self.store = store
        self.max_batch_events = max_batch_events
        # A batch that fails this fast is retried caller by caller; one that took longer (a held lock, a dead
        # database) fails every caller at once, so a queue of callers never waits one lock timeout each.
        self.retry_within = retry_within
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leader_busy = False

    def append(self, event: AuditEvent) -> Entry:
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[AuditEvent]) -> list[Entry]:
        waiter = _Waiter(list(events))
        if not waiter.events:
            return []
        with self._lock:
            self._queue.append(waiter)
            if not self._leader_busy:
                self._leader_busy = waiter.leads = True
        if not waiter.leads:
            waiter.done.wait()
        if waiter.leads:  # chosen at arrival, or handed the lead by the previous leader
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.entries

    def _lead(self) -> None:
        """Append one batch (which holds the leader's own events), then pass the lead to the next caller."""
        batch = self._take_batch()
        try:
            self._commit(batch)
        except BaseException:
            # The leader itself was interrupted (its green thread killed, say): nobody it carried may wait forever.
            for waiter in batch:
                if not waiter.leads and not waiter.done.is_set():
                    self._finish(waiter, error=AuditWriteError("audit event not recorded: the append was interrupted"))
            raise
        finally:
            self._pass_lead()

    def _pass_lead(self) -> None:
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leader_busy = False
            else:
                successor.leads = True
        if successor is not None:
            successor.done.set()

    def _take_batch(self) -> list[_Waiter]:
        with self._lock:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].events) <= self.max_batch_events):
                waiter = self._queue.pop(0)
                batch.append(waiter)
                size += len(waiter.events)
            return batch

    def _commit(self, batch: list[_Waiter]) -> None:
        started = time.monotonic()
        try:
            entries = self.store.append_many([event for waiter in batch for event in waiter.events])
        except Exception as exc:  # noqa: BLE001 - handed to each caller, who raises it
            if len(batch) > 1 and time.monotonic() - started < self.retry_within:
                for waiter in batch:
                    self._commit([waiter])
            else:
                for waiter in batch:
                    self._finish(waiter, error=exc)
            return
        start = 0
        for waiter in batch:
            self._finish(waiter, entries=entries[start:start + len(waiter.events)])
            start += len(waiter.events)

    @staticmethod
    def _finish(waiter: _Waiter, entries: list[Entry] | None = None, error: BaseException | None = None) -> None:
        waiter.entries, waiter.error = entries or [], error
        if not waiter.leads:
            waiter.done.set()
