"""Append-only audit stores: a SQL store for the portal and a JSONL file store.

Both serialise appends (one writer extends the log at a time, across threads and
processes), so no entry is lost or duplicated and seqs stay consecutive from 1. Every write
failure surfaces as AuditWriteError so callers can fail closed.

Each entry is a leaf of the RFC 9162 Merkle tree (audit/merkle.py); the SQL store writes the
tree's hashes in the same transaction as the entries (audit/tree.py). In that transaction both
stores sign a C2SP tree checkpoint (audit/tree_checkpoints.py) of the tree at every multiple of
`checkpoint_every` entries, the rule verifiers hold them to (a log whose checkpoints were deleted
could otherwise be rewritten and re-hashed), and on demand; the SQL store also signs one when the
newest is older than `checkpoint_seconds`, and keeps witness cosignatures. Both stores answer
tree_size, root, inclusion_proof and consistency_proof.

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
from audit.entries import Entry, SigningKey, canonical_json, parse_json
from audit.errors import AuditWriteError, MalformedEntryError, TreeError
from audit.events import AuditEvent, parse_time
from audit.export import checkpoint_record
from audit.filters import AuditFilter
from audit.note import NoteSigner, key_name_ok
from audit.queries import EVENT_COLUMNS, AuditQueries, entry_from_row, filter_clauses
from audit.schema import audit_entry
from audit.tree_checkpoints import TreeCheckpoint, TreeCosignature

# pg_advisory_xact_lock key shared by every portal process: ASCII "AUDIT".
ADVISORY_LOCK_KEY = 0x4155444954
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_LOCK_TIMEOUT_SECONDS = 5.0
DEFAULT_TREE_CHECKPOINT_SECONDS = 60.0
DEFAULT_ORIGIN = "localhost/audit"
WRITE_ATTEMPTS = 8
PAGE_SIZE = 1000

T = TypeVar("T")


class AuditStore(ABC):
    """The interface both stores share; the portal, CLI and verifier only use this."""

    keeps_tree = True
    """False for a store that derives its tree from the entries on every read: then nothing to verify apart."""

    def __init__(self, signing_key: SigningKey | None, checkpoint_every: int, origin: str | None) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        origin = DEFAULT_ORIGIN if origin is None else origin
        if not key_name_ok(origin):
            raise ValueError(f"the log origin {origin!r} is not a note key name (no spaces, no '+')")
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.origin = origin

    def append(self, event: AuditEvent) -> Entry:
        return self.append_many([event])[0]

    @abstractmethod
    def append_many(self, events: Iterable[AuditEvent]) -> list[Entry]:
        """Append all events in one atomic step, in order."""

    @abstractmethod
    def iter_entries(self, after_seq: int = 0, filter: AuditFilter | None = None) -> Iterator[Entry]:
        """Stream entries with seq > after_seq in seq order, optionally filtered."""

    @abstractmethod
    def head_seq(self) -> int:
        """The seq of the newest entry; 0 when empty."""

    @abstractmethod
    def sign_tree_checkpoint(self) -> TreeCheckpoint:
        """Sign and keep a checkpoint of the whole tree now (on demand)."""

    @abstractmethod
    def tree_checkpoints(self) -> list[TreeCheckpoint]:
        """Every signed tree checkpoint, in the order they were written (one per checkpoint_every entries: few)."""

    @abstractmethod
    def count(self) -> int:
        """Number of entries stored."""

    def count_through(self, seq: int) -> int:
        """Number of entries stored with a seq of at most ``seq``: exactly ``seq`` in an intact log, so a
        verifier learns of rows outside the tree (a seq below 1) that walking from seq 1 never meets."""
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

    def tree_signer(self) -> NoteSigner:
        """The log's note signer: the audit key under the key name `origin`."""
        return NoteSigner(self.origin, self._key())

    def due_checkpoints(self, old_size: int, new_size: int) -> range:
        """The tree sizes in (old_size, new_size] that must get a signed checkpoint: the multiples of checkpoint_every."""
        every = self.checkpoint_every
        return range((old_size // every + 1) * every, new_size + 1, every)


def entry_to_row(entry: Entry) -> dict[str, Any]:
    """Column values of an audit_entry row; details stored as canonical JSON text."""
    row = {name: getattr(entry.event, name) for name in EVENT_COLUMNS}
    row.update(seq=entry.seq, details=canonical_json(dict(entry.event.details)).decode("utf-8"))
    return row


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
    on PostgreSQL, BEGIN IMMEDIATE on SQLite), read the head, insert seq+1.. and the tree hashes they
    complete, sign the checkpoints due, commit. The primary keys on seq and on the tree's nodes back
    this up: a writer that somehow raced loses with a unique violation and retries on the new head
    instead of forking the log.

    A write waits at most `lock_timeout` seconds in all for its locks (this process's, then
    the database's, retries included) and then fails with AuditWriteError: a lock held by a
    stuck writer must not hang every request that needs an audit entry.

    Tree checkpoints (audit/tree_checkpoints.py) are signed under the key name `origin` (the log's
    note key name, e.g. "portal.example/audit"), in the append transaction at every multiple of
    `checkpoint_every` and when the newest one is older than `checkpoint_seconds`;
    `sign_tree_checkpoint()` signs one on demand.
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
        super().__init__(signing_key, checkpoint_every, origin)
        if not lock_timeout > 0:
            raise ValueError("lock_timeout must be a positive number of seconds")
        if not checkpoint_seconds > 0:
            raise ValueError("checkpoint_seconds must be a positive number of seconds")
        self.engine = engine
        self.lock_timeout = lock_timeout
        self.checkpoint_seconds = checkpoint_seconds
        self.clock = clock  # POSIX seconds: when a tree checkpoint is due, and its created time
        self._lock = threading.Lock()
        # clock() before which no tree checkpoint is due: read from the newest committed one, so
        # most appends skip the query; a checkpoint this process signs does not move it (it may roll back).
        self._tree_checkpoint_due_at = 0.0

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

    def first_missing_checkpoint(self, size: int, after: int = 0) -> int | None:
        """The first multiple of checkpoint_every in (after, size] with no stored checkpoint (None: none missing)."""
        with self.engine.connect() as conn:
            return tree_checkpoints.first_missing_multiple(conn, self.checkpoint_every, size, after)

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
        if self.clock() < self._tree_checkpoint_due_at:
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

    def probe_append(self) -> None:
        """Insert an entry, its leaf and a signed checkpoint under the append lock, then roll back: the same
        locks, triggers and privileges as a real append, and nothing kept."""
        self._key()
        self._write(self._rehearse_locked, keep=False)

    def _rehearse_locked(self, conn: sa.Connection) -> None:
        size = self._read_head(conn)
        entry = Entry(size + 1, AuditEvent(action="audit.probe", outcome="allowed"))
        conn.execute(audit_entry.insert(), entry_to_row(entry))
        tree.extend(conn, size, [entry])
        tree_checkpoints.sign(conn, self.tree_signer(), self._now())

    def _append_locked(self, conn: sa.Connection, events: list[AuditEvent]) -> list[Entry]:
        size = self._read_head(conn)
        entries = [Entry(seq, event) for seq, event in enumerate(events, start=size + 1)]
        conn.execute(audit_entry.insert(), [entry_to_row(entry) for entry in entries])
        new_size = tree.extend(conn, size, entries)
        signer = self.tree_signer()
        due = self.due_checkpoints(size, new_size)
        for checkpoint_size in due:
            tree_checkpoints.sign(conn, signer, self._now(), checkpoint_size)
        if new_size not in due and self._tree_checkpoint_due(conn):
            tree_checkpoints.sign(conn, signer, self._now())
        return entries

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
    def _read_head(conn: sa.Connection) -> int:
        return conn.execute(sa.select(sa.func.max(audit_entry.c.seq))).scalar_one() or 0

    def head_seq(self) -> int:
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

    Entry lines ({"type": "entry", seq, event, leaf_hash}) and, after the entry that completes each
    multiple of `checkpoint_every`, a checkpoint line ({"type": "checkpoint", created, note}: the
    signed C2SP tree checkpoint). Writers take an exclusive flock and append all their lines with a
    single write, so several processes can share one file. The tree's frontier is kept between
    appends while the file ends where this store last wrote; otherwise it is re-read from the file.
    """

    keeps_tree = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: SigningKey | None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        fsync: bool = True,
        origin: str | None = None,
    ) -> None:
        super().__init__(signing_key, checkpoint_every, origin)
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._tail: tuple[int, int, list[bytes]] | None = None  # (file size, tree size, frontier) after our write

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
        signer = self.tree_signer()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                size, frontier = self._frontier(fd)
                records, entries = [], []
                for seq, event in enumerate(events, start=size + 1):
                    entries.append(Entry(seq, event))
                    records.append(entries[-1].to_record())
                    size, frontier = merkle.append_leaves(frontier, size, [entries[-1].leaf_hash()], _discard)
                    if seq % self.checkpoint_every == 0:
                        records.append(_checkpoint_record(signer, seq, merkle.fold(frontier)))
                self._tail = (self._write(fd, records), size, frontier)
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"audit event not recorded: {exc}") from exc
        return entries

    def probe_append(self) -> None:
        """Open the file for appending under the writers' lock and read its tree; writes nothing."""
        self.tree_signer()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                self._frontier(fd)
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"the audit log cannot be appended to: {exc}") from exc

    def sign_tree_checkpoint(self) -> TreeCheckpoint:
        signer = self.tree_signer()
        try:
            with self._lock, self._locked(fcntl.LOCK_EX) as fd:
                size, frontier = self._frontier(fd)
                record = _checkpoint_record(signer, size, merkle.fold(frontier))
                self._tail = (self._write(fd, [record]), size, frontier)
        except (OSError, ValueError) as exc:
            raise AuditWriteError(f"checkpoint not recorded: {exc}") from exc
        return record_checkpoint(0, record)

    def _frontier(self, fd: int) -> tuple[int, list[bytes]]:
        """(tree size, frontier) of the file as it is now; refuses a file that ends in a torn line."""
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            raise AuditWriteError("the audit log ends with an incomplete line; verify it before appending")
        if self._tail is not None and self._tail[0] == end:
            return self._tail[1], list(self._tail[2])
        size, frontier = 0, []
        with open(os.dup(fd), "rb") as handle:  # the locked file itself: a second open() would wait for our lock
            records = (parse_jsonl_line(number, line) for number, line in enumerate(handle, start=1))
            entries = [Entry.from_record(record) for record in records if record["type"] == "entry"]
        for entry in entries:
            if entry.seq != size + 1:
                raise AuditWriteError(f"the audit log has seq {entry.seq} where {size + 1} belongs; verify it")
            size, frontier = merkle.append_leaves(frontier, size, [entry.leaf_hash()], _discard)
        return size, frontier

    def _write(self, fd: int, records: list[dict[str, Any]]) -> int:
        data = b"".join(_jsonl_line(record) for record in records)
        if os.write(fd, data) != len(data):
            raise AuditWriteError("short write to the audit log")
        if self.fsync:
            os.fsync(fd)
        return os.fstat(fd).st_size

    def head_seq(self) -> int:
        last = 0
        for entry in self.iter_entries():
            last = entry.seq
        return last

    def count(self) -> int:
        return sum(1 for _ in self._records("entry"))

    def _records(self, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
        if not os.path.exists(self.path):
            return
        for number, record in read_jsonl(self.path):
            if record["type"] == kind:
                yield number, record

    def iter_entries(self, after_seq: int = 0, filter: AuditFilter | None = None) -> Iterator[Entry]:
        for _, record in self._records("entry"):
            entry = Entry.from_record(record)
            if entry.seq > after_seq and (filter is None or filter.matches(entry.event, entry.seq)):
                yield entry

    def tree_checkpoints(self) -> list[TreeCheckpoint]:
        return [record_checkpoint(number, record) for number, record in self._records("checkpoint")]

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


def _discard(address: merkle.Address, digest: bytes) -> None:
    """An append_leaves `store` for a tree kept only as its frontier."""


def _checkpoint_record(signer: NoteSigner, size: int, root: bytes) -> dict[str, Any]:
    note = tree_checkpoints.sign_note(signer, size, root)
    return checkpoint_record(TreeCheckpoint(0, size, root, datetime.now(timezone.utc), note))


def record_checkpoint(number: int, record: dict[str, Any]) -> TreeCheckpoint:
    """A JSONL checkpoint record read back; `id` is its line number. Raises ValueError (NoteError) when it is
    not a checkpoint; its signature is not checked here."""
    note = record.get("note")
    if not isinstance(note, str):
        raise ValueError("a checkpoint record needs its signed note")
    body = tree_checkpoints.note_body(note)
    return TreeCheckpoint(number, body.size, body.root_hash, parse_time(str(record.get("created"))), note)
