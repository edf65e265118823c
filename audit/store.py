"""Append-only audit stores: a SQL store for the portal and a JSONL file store.

Both serialise appends (one writer extends the log at a time, across threads and
processes), so no entry is lost or duplicated and every entry links to its true
predecessor. Every write failure surfaces as AuditWriteError so callers can fail closed.

Each entry is at once a link of the hash chain (prev_hash, entry_hash: kept during the move to
the Merkle tree, to be removed by a later step) and a leaf of the RFC 9162 Merkle tree
(audit/merkle.py), whose stored hashes the SQL store writes in the same transaction as the
entries (audit/tree.py). Both stores answer tree_size, root, inclusion_proof and
consistency_proof; the SQL store also signs C2SP tree checkpoints and keeps witness cosignatures
(audit/tree_checkpoints.py).

Long because the interface and its two implementations belong together: each store's locking,
retry and tail-reading code is specific to it, and the tree's storage is already apart (tree.py).
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import sqlalchemy as sa

from audit import merkle, tree, tree_checkpoints
from audit.chain import GENESIS_HASH, Checkpoint, Entry, SigningKey, canonical_json, parse_json
from audit.errors import AuditWriteError, MalformedEntryError, TreeError
from audit.events import AuditEvent
from audit.filters import AuditFilter
from audit.note import NoteSigner, key_name_ok
from audit.queries import EVENT_COLUMNS, AuditQueries, entry_from_row, filter_clauses
from audit.schema import audit_checkpoint, audit_entry, audit_tree_node
from audit.tree_checkpoints import TreeCheckpoint, TreeCosignature

# pg_advisory_xact_lock key shared by every portal process: ASCII "AUDIT".
ADVISORY_LOCK_KEY = 0x4155444954
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_LOCK_TIMEOUT_SECONDS = 5.0
DEFAULT_TREE_CHECKPOINT_SECONDS = 60.0
WRITE_ATTEMPTS = 8
PAGE_SIZE = 1000

T = TypeVar("T")



class AuditStore(ABC):
    """The interface both stores share; the portal, CLI and verifier only use this."""

    keeps_tree = True
    """False for a store that derives its tree from the entries on every read: then nothing to verify apart."""

    def __init__(self, signing_key: SigningKey | None, checkpoint_every: int) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every

    def append(self, event: AuditEvent) -> Entry:
        return self.append_many([event])[0]

    @abstractmethod
    def append_many(self, events: Iterable[AuditEvent]) -> list[Entry]:
        """Append all events in one atomic step, in order."""

    @abstractmethod
    def iter_entries(self, after_seq: int = 0, filter: AuditFilter | None = None) -> Iterator[Entry]:
        """Stream entries with seq > after_seq in seq order, optionally filtered."""

    @abstractmethod
    def head(self) -> tuple[int, str]:
        """(seq, entry_hash) of the newest entry; (0, GENESIS_HASH) when empty."""

    @abstractmethod
    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the current head now."""

    @abstractmethod
    def iter_checkpoints(self) -> Iterator[Checkpoint]:
        """Stream checkpoints in the order they were written."""

    @abstractmethod
    def count(self) -> int:
        """Number of entries stored."""

    def count_through(self, seq: int) -> int:
        """Number of entries stored with a seq of at most ``seq``: exactly ``seq`` in an intact log, so a
        verifier learns of rows outside the chain (a seq below 1) that walking from seq 1 never meets."""
        return sum(1 for entry in self.iter_entries() if entry.seq <= seq)

    @abstractmethod
    def probe_append(self) -> None:
        """Rehearse an append without keeping it; raises AuditWriteError when a real append would fail now.

        Writes nothing, so a readiness probe may call it every few seconds.
        """

    @abstractmethod
    def tree_size(self) -> int:
        """Number of leaves in the Merkle tree (entries it covers)."""

    @abstractmethod
    def stored_hashes(self, addresses: Sequence[merkle.Address]) -> list[bytes]:
        """Stored subtree hashes by (level, index), as audit.merkle.HashReader; TreeError if one is missing."""

    def root(self, size: int | None = None) -> bytes:
        """RFC 9162 root of the first `size` entries (default: all)."""
        size = self._checked_size(size)
        return merkle.root(size, self.stored_hashes)

    def leaf_hash(self, index: int) -> bytes:
        """The stored leaf hash of entry seq index + 1."""
        if index < 0:
            raise ValueError(f"leaf index {index} is negative")
        self._checked_size(index + 1)
        return self.stored_hashes([(0, index)])[0]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` (entry seq index + 1) in the tree of `size` entries."""
        self._checked_size(size)
        return merkle.inclusion_proof(index, size, self.stored_hashes)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof from the tree of `old` entries to that of `new` entries."""
        self._checked_size(new)
        return merkle.consistency_proof(old, new, self.stored_hashes)

    def _checked_size(self, size: int | None) -> int:
        stored = self.tree_size()
        if size is None:
            return stored
        if not 0 <= size <= stored:
            raise ValueError(f"the audit tree has {stored} entries, so no tree of size {size}")
        return size

    def _key(self) -> SigningKey:
        if self.signing_key is None:
            raise AuditWriteError("this audit store was opened without a signing key and is read-only")
        return self.signing_key

    def _extend(self, head: tuple[int, str], events: list[AuditEvent]) -> tuple[list[Entry], list[Checkpoint]]:
        """Chain events onto head, signing a checkpoint at every multiple of checkpoint_every."""
        seq, prev_hash = head
        entries, checkpoints = [], []
        for event in events:
            seq += 1
            entry = Entry.create(seq, prev_hash, event)
            entries.append(entry)
            prev_hash = entry.entry_hash
            if seq % self.checkpoint_every == 0:
                checkpoints.append(Checkpoint.sign(seq, prev_hash, self._key()))
        return entries, checkpoints


def entry_to_row(entry: Entry) -> dict[str, Any]:
    """Column values of an audit_entry row; details stored as canonical JSON text."""
    row = {name: getattr(entry.event, name) for name in EVENT_COLUMNS}
    row.update(
        seq=entry.seq,
        details=canonical_json(dict(entry.event.details)).decode("utf-8"),
        prev_hash=entry.prev_hash,
        entry_hash=entry.entry_hash,
    )
    return row


def _checkpoint_row(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "count": checkpoint.count,
        "head_hash": checkpoint.head_hash,
        "created": checkpoint.created,
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
        "public_key": checkpoint.public_key,
    }


def _row_checkpoint(row: sa.Row) -> Checkpoint:
    return Checkpoint(row.count, row.head_hash, row.created, row.key_id, row.signature, row.public_key)


def _milliseconds_until(deadline: float) -> int:
    """What is left until a time.monotonic() deadline, at least 1 ms (0 would mean "wait forever")."""
    return max(1, int((deadline - time.monotonic()) * 1000))


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """Lock contention (SQLite busy) or a lost race for a seq (unique violation) is worth retrying."""
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    text = str(exc.orig).lower()
    return isinstance(exc, sa.exc.OperationalError) and ("locked" in text or "busy" in text)


class SqlAuditStore(AuditStore, AuditQueries):
    """Audit log in the portal's database (tables from audit.schema).

    Each append is one short transaction: take a serialising lock (pg_advisory_xact_lock
    on PostgreSQL, BEGIN IMMEDIATE on SQLite), read the head, insert seq+1.., commit.
    The primary key on seq backs this up: a writer that somehow raced loses with a unique
    violation and retries on the new head instead of forking the chain.

    A write waits at most `lock_timeout` seconds in all for its locks (this process's, then
    the database's, retries included) and then fails with AuditWriteError: a lock held by a
    stuck writer must not hang every request that needs an audit entry.

    With an `origin` (the note key name of the log, e.g. "portal.example/audit"), an append also
    signs a tree checkpoint (audit/tree_checkpoints.py) in its transaction when the newest one is
    older than `checkpoint_seconds`; `sign_tree_checkpoint()` signs one on demand.
    """

    def __init__(
        self,
        engine: sa.Engine,
        signing_key: SigningKey | None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
        origin: str | None = None,
        checkpoint_seconds: float = DEFAULT_TREE_CHECKPOINT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(signing_key, checkpoint_every)
        if not lock_timeout > 0:
            raise ValueError("lock_timeout must be a positive number of seconds")
        if origin is not None and not key_name_ok(origin):
            raise ValueError(f"the log origin {origin!r} is not a note key name (no spaces, no '+')")
        if not checkpoint_seconds > 0:
            raise ValueError("checkpoint_seconds must be a positive number of seconds")
        self.engine = engine
        self.lock_timeout = lock_timeout
        self.origin = origin
        self.checkpoint_seconds = checkpoint_seconds
        self.clock = clock  # POSIX seconds: when a tree checkpoint is due, and its created time
        self._lock = threading.Lock()
        # clock() before which no tree checkpoint is due: read from the newest committed one, so
        # most appends skip the query; a checkpoint this process signs does not move it (it may roll back).
        self._tree_checkpoint_due_at = 0.0

    def tree_signer(self) -> NoteSigner:
        """The log's note signer: the audit key under the key name `origin`."""
        if self.origin is None:
            raise AuditWriteError("this audit store has no log origin, so it signs no tree checkpoints")
        return NoteSigner(self.origin, self._key())

    def sign_tree_checkpoint(self) -> TreeCheckpoint:
        """Sign and keep a checkpoint of the whole tree now (on demand)."""
        signer = self.tree_signer()
        return self._write(lambda conn: tree_checkpoints.sign(conn, signer, self._now()))

    def latest_tree_checkpoint(self) -> TreeCheckpoint | None:
        with self.engine.connect() as conn:
            return tree_checkpoints.latest(conn)

    def tree_checkpoint_of_size(self, tree_size: int) -> TreeCheckpoint | None:
        """The checkpoint signed of the tree of `tree_size` entries, if one was."""
        with self.engine.connect() as conn:
            return tree_checkpoints.of_size(conn, tree_size)

    def tree_checkpoints(self) -> list[TreeCheckpoint]:
        """Every signed tree checkpoint, oldest first."""
        with self.engine.connect() as conn:
            return tree_checkpoints.all_checkpoints(conn)

    def record_cosignature(self, tree_size: int, root_hash: bytes, witness: str, cosigned_at: datetime,
                           note: str) -> TreeCosignature:
        """Keep a witness's cosignature (the note with the log's and the witness's signatures)."""
        return self._write(lambda conn: tree_checkpoints.record_cosignature(
            conn, tree_size, root_hash, witness, cosigned_at, note))

    def latest_cosignature(self, witness: str | None = None) -> TreeCosignature | None:
        with self.engine.connect() as conn:
            return tree_checkpoints.latest_cosignature(conn, witness)

    def first_unwitnessed(self, witnessed_size: int) -> TreeCheckpoint | None:
        """The oldest checkpoint of a tree larger than `witnessed_size` (None: the witness has seen them all)."""
        with self.engine.connect() as conn:
            return tree_checkpoints.first_unwitnessed(conn, witnessed_size)

    def unwitnessed_seconds(self, witness: str) -> float:
        """How long the log has held a signed checkpoint larger than the last one `witness` (name+keyid)
        cosigned: 0 while the witness has cosigned the newest. What /readyz bounds."""
        with self.engine.connect() as conn:
            cosigned = tree_checkpoints.latest_cosignature(conn, witness)
            waiting = tree_checkpoints.first_unwitnessed(conn, cosigned.tree_size if cosigned else 0)
        return 0.0 if waiting is None else max(0.0, self.clock() - waiting.created.timestamp())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def _tree_checkpoint_due(self, conn: sa.Connection) -> bool:
        if self.origin is None or self.clock() < self._tree_checkpoint_due_at:
            return False
        newest = tree_checkpoints.latest(conn)
        if newest is not None:
            due_at = newest.created.timestamp() + self.checkpoint_seconds
            if self.clock() < due_at:
                self._tree_checkpoint_due_at = due_at
                return False
        return True

    def append_many(self, events: Iterable[AuditEvent]) -> list[Entry]:
        events = list(events)
        if not events:
            return []
        self._key()
        return self._write(lambda conn: self._append_locked(conn, events))

    def checkpoint(self) -> Checkpoint:
        self._key()
        return self._write(self._checkpoint_locked)

    def probe_append(self) -> None:
        """Insert an entry and a checkpoint under the append lock, then roll back: the same locks,
        triggers and privileges as a real append, and nothing kept."""
        self._key()
        self._write(self._rehearse_locked, keep=False)

    def _rehearse_locked(self, conn: sa.Connection) -> None:
        seq, head_hash = self._read_head(conn)
        entry = Entry.create(seq + 1, head_hash, AuditEvent(action="audit.probe", outcome="allowed"))
        conn.execute(audit_entry.insert(), entry_to_row(entry))
        conn.execute(audit_tree_node.insert(), {"level": 0, "idx": seq, "hash": entry.leaf_hash()})
        conn.execute(audit_checkpoint.insert(), _checkpoint_row(Checkpoint.sign(entry.seq, entry.entry_hash, self._key())))

    def _append_locked(self, conn: sa.Connection, events: list[AuditEvent]) -> list[Entry]:
        head = self._read_head(conn)
        entries, checkpoints = self._extend(head, events)
        conn.execute(audit_entry.insert(), [entry_to_row(entry) for entry in entries])
        tree.extend(conn, head[0], entries)
        for checkpoint in checkpoints:
            conn.execute(audit_checkpoint.insert(), _checkpoint_row(checkpoint))
        if self._tree_checkpoint_due(conn):
            tree_checkpoints.sign(conn, self.tree_signer(), self._now())
        return entries

    def _checkpoint_locked(self, conn: sa.Connection) -> Checkpoint:
        count, head_hash = self._read_head(conn)
        checkpoint = Checkpoint.sign(count, head_hash, self._key())
        conn.execute(audit_checkpoint.insert(), _checkpoint_row(checkpoint))
        return checkpoint

    def _write(self, work: Callable[[sa.Connection], T], keep: bool = True) -> T:
        """Run work(conn) in a locked transaction, retrying contention until the lock deadline;
        anything else fails closed. keep=False rolls the transaction back instead of committing."""
        deadline = time.monotonic() + self.lock_timeout
        try:
            if not self._lock.acquire(timeout=self.lock_timeout):
                raise AuditWriteError(f"audit event not recorded: no append lock within {self.lock_timeout:g} s")
            try:
                return self._attempts(work, deadline, keep)
            finally:
                self._lock.release()
        except AuditWriteError:
            raise
        except Exception as exc:
            raise AuditWriteError(f"audit event not recorded: {type(exc).__name__}: {exc}") from exc

    def _attempts(self, work: Callable[[sa.Connection], T], deadline: float, keep: bool) -> T:
        """Retry lost races and SQLite busy errors; every wait, retries included, ends at `deadline`."""
        attempt = 1
        while True:
            try:
                return self._transaction(work, _milliseconds_until(deadline), keep)
            except sa.exc.DBAPIError as exc:
                backoff = 0.01 * 2 ** (attempt - 1)
                if not _retryable(exc) or attempt == WRITE_ATTEMPTS or time.monotonic() + backoff >= deadline:
                    raise
                time.sleep(backoff)
                attempt += 1

    def _transaction(self, work: Callable[[sa.Connection], T], lock_wait_ms: int, keep: bool) -> T:
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql" and conn.default_isolation_level != "READ COMMITTED":
                # The head must be read after the lock is granted, i.e. in a fresh snapshot.
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            try:
                self._serialise(conn, lock_wait_ms)
                result = work(conn)
                if keep:
                    conn.commit()
                else:
                    conn.rollback()
            except BaseException:
                conn.rollback()
                raise
            return result

    @staticmethod
    def _serialise(conn: sa.Connection, lock_wait_ms: int) -> None:
        """Take the cross-process append lock for the rest of this transaction, waiting at most lock_wait_ms."""
        if conn.dialect.name == "postgresql":
            # set_config(..., true) is SET LOCAL: the bound ends with this transaction.
            conn.execute(sa.select(sa.func.set_config("lock_timeout", f"{lock_wait_ms}ms", True)))
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout={lock_wait_ms}")
            if not conn.connection.driver_connection.in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @staticmethod
    def _read_head(conn: sa.Connection) -> tuple[int, str]:
        row = conn.execute(
            sa.select(audit_entry.c.seq, audit_entry.c.entry_hash).order_by(audit_entry.c.seq.desc()).limit(1)
        ).first()
        return (row.seq, row.entry_hash) if row else (0, GENESIS_HASH)

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            return self._read_head(conn)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(audit_entry)).scalar_one()

    def count_through(self, seq: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(audit_entry)
                                .where(audit_entry.c.seq <= seq)).scalar_one()
    def tree_size(self) -> int:
        with self.engine.connect() as conn:
            return tree.stored_size(conn)

    def stored_hashes(self, addresses: Sequence[merkle.Address]) -> list[bytes]:
        with self.engine.connect() as conn:
            return tree.read_hashes(conn, addresses)

    def iter_entries(self, after_seq: int = 0, filter: AuditFilter | None = None) -> Iterator[Entry]:
        """Keyset-paged reads: constant memory, and no transaction held open between pages."""
        query = sa.select(audit_entry).where(*filter_clauses(filter)).order_by(audit_entry.c.seq).limit(PAGE_SIZE)
        last = after_seq
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(audit_entry.c.seq > last)).all()
            for row in rows:
                yield entry_from_row(row)
            if len(rows) < PAGE_SIZE:
                return
            last = rows[-1].seq

    def iter_checkpoints(self) -> Iterator[Checkpoint]:
        query = sa.select(audit_checkpoint).order_by(audit_checkpoint.c.id).limit(PAGE_SIZE)
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(audit_checkpoint.c.id > last)).all()
            for row in rows:
                yield _row_checkpoint(row)
            if len(rows) < PAGE_SIZE:
                return
            last = rows[-1].id


def read_jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) for each line present when reading started.

    The size is taken under a shared lock, so a line that a concurrent writer is still
    appending is never read half-written.
    """
    with open(path, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        size = os.fstat(handle.fileno()).st_size
        fcntl.flock(handle, fcntl.LOCK_UN)
        consumed = 0
        for number, line in enumerate(handle, start=1):
            consumed += len(line)
            if consumed > size:
                return
            yield number, line


def parse_jsonl_line(number: int, line: bytes) -> dict[str, Any]:
    """One record; anything that is not a complete JSON object raises MalformedEntryError(number)."""
    if not line.endswith(b"\n"):
        raise MalformedEntryError(number, "incomplete last line (truncated write)")
    try:
        record = parse_json(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEntryError(number, f"not valid JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise MalformedEntryError(number, "not a JSON object with a 'type'")
    return record


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record); a malformed line raises MalformedEntryError naming it."""
    for number, line in read_jsonl_lines(path):
        yield number, parse_jsonl_line(number, line)


def _jsonl_line(record: dict[str, Any]) -> bytes:
    return canonical_json(record) + b"\n"


class JsonlAuditStore(AuditStore):
    """Audit log in a JSON Lines file: for deployments without a database and for tests.

    Writers take an exclusive flock, read the head from the file's tail and append all
    their lines with a single write, so several processes can share one file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: SigningKey | None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        fsync: bool = True,
    ) -> None:
        super().__init__(signing_key, checkpoint_every)
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self, mode: int) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield fd
        finally:
            os.close(fd)

    def append_many(self, events: Iterable[AuditEvent]) -> list[Entry]:
        events = list(events)
        if not events:
            return []
        self._key()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                entries, checkpoints = self._extend(_tail_head(fd), events)
                self._write(fd, _interleave(entries, checkpoints))
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"audit event not recorded: {exc}") from exc
        return entries

    def probe_append(self) -> None:
        """Open the file for appending under the writers' lock and read its head; writes nothing."""
        self._key()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                _tail_head(fd)
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"the audit log cannot be appended to: {exc}") from exc

    def checkpoint(self) -> Checkpoint:
        key = self._key()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                checkpoint = Checkpoint.sign(*_tail_head(fd), key)
                self._write(fd, [checkpoint.to_record()])
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"checkpoint not recorded: {exc}") from exc
        return checkpoint

    def _write(self, fd: int, records: list[dict[str, Any]]) -> None:
        data = b"".join(_jsonl_line(record) for record in records)
        if os.write(fd, data) != len(data):
            raise AuditWriteError("short write to the audit log")
        if self.fsync:
            os.fsync(fd)

    def head(self) -> tuple[int, str]:
        if not os.path.exists(self.path):
            return 0, GENESIS_HASH
        with self._locked(fcntl.LOCK_SH) as fd:
            return _tail_head(fd)

    def count(self) -> int:
        """Entries are only ever appended with consecutive seqs, so the head seq is the count."""
        return self.head()[0]

    def _records(self, kind: str) -> Iterator[dict[str, Any]]:
        if not os.path.exists(self.path):
            return
        for _, record in read_jsonl(self.path):
            if record["type"] == kind:
                yield record

    def iter_entries(self, after_seq: int = 0, filter: AuditFilter | None = None) -> Iterator[Entry]:
        for record in self._records("entry"):
            entry = Entry.from_record(record)
            if entry.seq > after_seq and (filter is None or filter.matches(entry.event, entry.seq)):
                yield entry

    def iter_checkpoints(self) -> Iterator[Checkpoint]:
        for record in self._records("checkpoint"):
            yield Checkpoint.from_record(record)

    keeps_tree = False

    def tree_size(self) -> int:
        return self.count()

    def stored_hashes(self, addresses: Sequence[merkle.Address]) -> list[bytes]:
        """The file stores no tree: each call re-hashes the leaves, O(n) (fine for the small logs it serves)."""
        leaves = []
        for expected_seq, entry in enumerate(self.iter_entries(), start=1):
            if entry.seq != expected_seq:
                raise TreeError(f"audit entry seq {entry.seq} where {expected_seq} belongs: the tree cannot be built")
            leaves.append(entry.leaf_hash())
        hashes = []
        for level, index in addresses:
            start, end = index << level, (index + 1) << level
            if end > len(leaves):
                raise TreeError(f"the audit log has {len(leaves)} entries, none at level {level}, index {index}")
            hashes.append(merkle.tree_hash(leaves[start:end]))
        return hashes


def _interleave(entries: list[Entry], checkpoints: list[Checkpoint]) -> list[dict[str, Any]]:
    """Records in file order: each checkpoint right after the entry it signs."""
    by_count = {checkpoint.count: checkpoint for checkpoint in checkpoints}
    records = []
    for entry in entries:
        records.append(entry.to_record())
        if entry.seq in by_count:
            records.append(by_count[entry.seq].to_record())
    return records


def _tail_head(fd: int) -> tuple[int, str]:
    """Find the last entry by reading backwards from the end, so appends stay O(1) in file size."""
    position = os.fstat(fd).st_size
    if position == 0:
        return 0, GENESIS_HASH
    if os.pread(fd, 1, position - 1) != b"\n":
        raise AuditWriteError("the audit log ends with an incomplete line; verify it before appending")
    partial = b""
    while position > 0:
        step = min(65536, position)
        position -= step
        lines = (os.pread(fd, step, position) + partial).split(b"\n")
        partial = lines.pop(0) if position > 0 else b""
        for line in reversed(lines):
            if line.strip():
                record = parse_json(line)
                if record.get("type") == "entry":
                    return record["seq"], record["entry_hash"]
    return 0, GENESIS_HASH
