"""Streaming verification of audit logs and JSONL exports.

Checks, in one pass and constant memory (a one-entry look-ahead classifies problems):

* every entry's own hash (catches edited fields);
* chain links: seq increases by one and prev_hash equals the predecessor's hash
  (catches deleted, inserted and reordered entries);
* every checkpoint's Ed25519 signature and that its head hash is the hash of the entry at
  its count (catches forged checkpoints and a rewritten history);
* that the log reaches the count of every checkpoint (catches a truncated tail).

A hash chain cannot tell a forged entry appended *after* the last checkpoint from a real
one, and cannot reveal a truncated tail that no checkpoint covers: keep checkpoints (or
exports with their manifests) somewhere the database's writers cannot reach.

The first problem found is reported, with its position (seq for stores, line number for
files) and kind; verification never raises on bad input.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from audit.chain import GENESIS_HASH, Checkpoint, Entry, VerifyKey
from audit.errors import MalformedEntryError
from audit.export import ExportDigest, ExportManifest
from audit.store import AuditStore, parse_jsonl_line, read_jsonl_lines

KINDS = frozenset({
    "edited", "deleted", "inserted", "reordered", "truncated",
    "bad_checkpoint_signature", "checkpoint_mismatch", "malformed",
})
PROGRESS_EVERY = 1000

Positioned = tuple[int, Entry]
Progress = Callable[[int], Any]


@dataclass(frozen=True)
class Problem:
    position: int
    kind: str
    message: str


@dataclass
class VerifyReport:
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    problem: Problem | None = None
    key_id: str | None = None
    self_asserted_key: bool = False
    mode: str = "chain"

    def summary(self) -> str:
        """The one-line result the CLI prints."""
        checked = f"{self.entries_checked} entries, {self.checkpoints_checked} signatures"
        if self.ok:
            return f"OK: {self.mode} intact ({checked})"
        problem = self.problem
        return f"FAILED: {problem.kind} at position {problem.position}: {problem.message} (checked {checked})"


class _Found(Exception):
    def __init__(self, position: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(position, kind, message)


class _Peekable:
    """(position, entry) stream with one-item look-ahead; a parse error surfaces when reached."""

    def __init__(self, items: Iterable[Positioned]) -> None:
        self._items = iter(items)
        self._next: Positioned | None = None
        self._error: MalformedEntryError | None = None

    def peek(self) -> Positioned | None:
        if self._next is None and self._error is None:
            try:
                self._next = next(self._items)
            except StopIteration:
                pass
            except MalformedEntryError as exc:
                self._error = exc
        return self._next

    def pop(self) -> Positioned | None:
        item = self.peek()
        if item is None and self._error is not None:
            raise _Found(self._error.position, "malformed", self._error.message)
        self._next = None
        return item


class _ChainChecker:
    """Checks one entry at a time against its predecessor.

    linked=False (filtered exports) checks only each entry's own hash and that seqs
    increase; anchored=True requires the chain to start at seq 1 from the genesis hash;
    seq_positions=True means positions are seqs, so a gap names the missing seq.
    """

    def __init__(self, linked: bool = True, anchored: bool = True, seq_positions: bool = True) -> None:
        self.linked = linked
        self.anchored = anchored
        self.seq_positions = seq_positions
        self.prev: Positioned | None = None

    @property
    def last_seq(self) -> int:
        return self.prev[1].seq if self.prev else 0

    def check(self, position: int, entry: Entry, stream: _Peekable) -> None:
        if not entry.hash_ok():
            self._self_hash_failed(position, entry, stream)
        if self.prev is not None and entry.seq == self.prev[1].seq:
            self._duplicate(position, entry, stream)
        if self.prev is not None and entry.seq < self.prev[1].seq:
            raise _Found(position, "reordered", f"seq {entry.seq} follows seq {self.prev[1].seq}")
        if self.linked:
            self._check_link(position, entry, stream)
        self.prev = (position, entry)

    @staticmethod
    def _self_hash_failed(position: int, entry: Entry, stream: _Peekable) -> None:
        for moved_from in (entry.seq + 1, entry.seq - 1):
            if entry.recompute_hash(moved_from) == entry.entry_hash:
                raise _Found(position, "reordered",
                             f"entry stored at seq {entry.seq} was written as seq {moved_from}")
        raise _Found(position, "edited", f"seq {entry.seq}: content does not match its entry_hash")

    def _duplicate(self, position: int, entry: Entry, stream: _Peekable) -> None:
        prev_position, prev = self.prev
        following = stream.peek()
        if entry.prev_hash == prev.prev_hash and following and following[1].prev_hash == entry.entry_hash:
            raise _Found(prev_position, "inserted", f"seq {prev.seq} forged: the chain continues from its twin")
        raise _Found(position, "inserted", f"second entry with seq {entry.seq}")

    def _check_link(self, position: int, entry: Entry, stream: _Peekable) -> None:
        expected_seq = self.last_seq + 1 if self.prev or self.anchored else entry.seq
        if entry.seq > expected_seq:
            self._gap(position, entry, expected_seq, stream)
        expected_prev = self.prev[1].entry_hash if self.prev else (GENESIS_HASH if entry.seq == 1 else None)
        if expected_prev is not None and entry.prev_hash != expected_prev:
            self._broken_link(position, entry, stream)

    def _gap(self, position: int, entry: Entry, expected_seq: int, stream: _Peekable) -> None:
        following = stream.peek()
        if following and following[1].seq < entry.seq:
            raise _Found(position, "reordered", f"seq {entry.seq} comes before seq {following[1].seq}")
        missing = f"{expected_seq}" if entry.seq == expected_seq + 1 else f"{expected_seq}..{entry.seq - 1}"
        raise _Found(expected_seq if self.seq_positions else position, "deleted",
                     f"seq {missing} missing before seq {entry.seq}")

    def _broken_link(self, position: int, entry: Entry, stream: _Peekable) -> None:
        following = stream.peek()
        continues = (
            following is not None
            and following[1].seq == entry.seq + 1
            and following[1].prev_hash == entry.entry_hash
            and following[1].hash_ok()
        )
        if continues and self.prev is not None:
            raise _Found(self.prev[0], "edited",
                         f"seq {self.prev[1].seq} was rewritten (its hash was recomputed to hide the edit)")
        raise _Found(position, "inserted", f"seq {entry.seq} does not link to its predecessor")


class _CheckpointCursor:
    """Walks checkpoints alongside the entries; each must be signed and match the entry at its count."""

    def __init__(self, checkpoints: Iterable[tuple[int, Checkpoint]], key: VerifyKey | None) -> None:
        self._checkpoints = iter(checkpoints)
        self.key = key
        self.self_asserted = False
        self.checked = 0
        self._pending = self._advance()

    def _advance(self) -> tuple[int, Checkpoint] | None:
        item = next(self._checkpoints, None)
        if item is not None:
            self._check_signature(*item)
        return item

    def _check_signature(self, position: int, checkpoint: Checkpoint) -> None:
        if self.key is None:
            self.key = _embedded_key(position, checkpoint.public_key)
            self.self_asserted = True
        if checkpoint.key_id != self.key.key_id:
            raise _Found(position, "bad_checkpoint_signature",
                         f"checkpoint at count {checkpoint.count} names key {checkpoint.key_id}, "
                         f"expected {self.key.key_id}")
        if not checkpoint.signature_ok(self.key):
            raise _Found(position, "bad_checkpoint_signature",
                         f"checkpoint at count {checkpoint.count} has an invalid signature")
        self.checked += 1

    def reached(self, seq: int, head_hash: str) -> None:
        """Check every checkpoint up to `seq`, the seq of the entry just accepted."""
        while self._pending is not None and self._pending[1].count <= seq:
            position, checkpoint = self._pending
            if checkpoint.count < seq:
                raise _Found(position, "checkpoint_mismatch",
                             f"checkpoint at count {checkpoint.count} is out of order")
            if checkpoint.head_hash != head_hash:
                raise _Found(position, "checkpoint_mismatch",
                             f"checkpoint at count {checkpoint.count} signs a different head hash "
                             "than the entry with that seq")
            self._pending = self._advance()

    def finish(self, last_seq: int, end_position: int) -> None:
        if self._pending is None:
            return
        position, checkpoint = self._pending
        raise _Found(end_position, "truncated",
                     f"log ends at seq {last_seq} but a checkpoint (position {position}) "
                     f"signed {checkpoint.count} entries")


def _embedded_key(position: int, public_key: str | None) -> VerifyKey:
    try:
        return VerifyKey.from_raw_b64(public_key or "")
    except ValueError:
        raise _Found(position, "bad_checkpoint_signature", "no usable public key to check signatures") from None


def _run_chain(
    entries: Iterable[Positioned],
    checkpoints: Iterable[tuple[int, Checkpoint]],
    verify_key: VerifyKey | None,
    progress: Progress | None,
    checker: _ChainChecker,
    observe: Callable[[int, Entry], None] = lambda position, entry: None,
) -> VerifyReport:
    """Drive checker and checkpoints over the stream; return a report whatever happens."""
    count = 0
    cursor = None
    try:
        cursor = _CheckpointCursor(checkpoints, verify_key)
        cursor.reached(0, GENESIS_HASH)
        stream = _Peekable(entries)
        while (item := stream.pop()) is not None:
            position, entry = item
            checker.check(position, entry, stream)
            observe(position, entry)
            cursor.reached(entry.seq, entry.entry_hash)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
        end = checker.prev[0] + 1 if checker.prev else 1
        cursor.finish(checker.last_seq, checker.last_seq + 1 if checker.seq_positions else end)
        problem = None
    except _Found as found:
        problem = found.problem
    if progress is not None:
        progress(count % PROGRESS_EVERY)
    return VerifyReport(
        ok=problem is None,
        entries_checked=count,
        checkpoints_checked=cursor.checked if cursor else 0,
        problem=problem,
        key_id=cursor.key.key_id if cursor and cursor.key else None,
        self_asserted_key=bool(cursor and cursor.self_asserted),
    )


def verify(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint],
    verify_key: VerifyKey | None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify a full chain from seq 1 against its checkpoints; positions in the report are seqs.

    `checkpoints` must come in the order they were written. With verify_key=None the key
    embedded in the first checkpoint is used and the report says it is self-asserted.
    `progress(n)` is called with the number of entries checked since the last call
    (pass tqdm's `update`).
    """
    return _run_chain(
        ((entry.seq, entry) for entry in entries),
        ((checkpoint.count, checkpoint) for checkpoint in checkpoints),
        verify_key,
        progress,
        _ChainChecker(linked=True, anchored=True, seq_positions=True),
    )


def verify_store(store: AuditStore, verify_key: VerifyKey | None, progress: Progress | None = None) -> VerifyReport:
    """Verify everything in a store; see verify()."""
    return verify(store.iter_entries(), store.iter_checkpoints(), verify_key, progress)


def _file_entries(path: str | os.PathLike[str], skip: frozenset[str]) -> Iterator[Positioned]:
    """Entry lines of a JSONL file as (line number, entry); other known record types are skipped."""
    for number, line in read_jsonl_lines(path):
        record = parse_jsonl_line(number, line)
        kind = record["type"]
        if kind == "entry":
            yield number, _entry_from_record(number, record)
        elif kind not in skip:
            raise MalformedEntryError(number, f"unexpected record type {kind!r}")


def _entry_from_record(number: int, record: dict[str, Any]) -> Entry:
    try:
        return Entry.from_record(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEntryError(number, f"unreadable entry: {exc!r}") from None


def _file_checkpoints(path: str | os.PathLike[str]) -> Iterator[tuple[int, Checkpoint]]:
    """Checkpoint lines as (line number, checkpoint). Unparseable lines are left to the entry pass,
    which reports them at the right point in the stream; an unreadable checkpoint is unsigned."""
    for number, line in read_jsonl_lines(path):
        try:
            record = parse_jsonl_line(number, line)
        except MalformedEntryError:
            continue
        if record["type"] == "checkpoint":
            try:
                yield number, Checkpoint.from_record(record)
            except (KeyError, TypeError, ValueError):
                raise _Found(number, "bad_checkpoint_signature", "unreadable checkpoint record") from None


def _edge_records(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]] | None]:
    """First record and (line number, last record), read without loading the file."""
    first = last = None
    with open(path, "rb") as handle:
        line = handle.readline()
    if line:
        try:
            first = parse_jsonl_line(1, line)
        except MalformedEntryError:
            first = None
    tail = _last_line(path)
    if tail is not None:
        try:
            last = (tail[0], parse_jsonl_line(*tail))
        except MalformedEntryError:
            last = None
    return first, last


def _last_line(path: str | os.PathLike[str]) -> tuple[int, bytes] | None:
    last = None
    for number, line in read_jsonl_lines(path):
        last = (number, line)
    return last


def verify_file(
    path: str | os.PathLike[str], verify_key: VerifyKey | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Verify a JSONL store file or a JSONL export; positions in the report are line numbers.

    Store file (entry and checkpoint lines): the full chain from seq 1 and its checkpoints,
    as verify() does.

    Export (first line {"type":"export"}, last line the signed manifest): each entry's own
    hash and increasing seqs always; when the manifest says the export is contiguous, also
    the chain links (from the first exported seq, and from genesis when that is 1) and any
    checkpoints it carries. Then the manifest: signature, entry count, first seq and the
    digest over the entry hashes. A missing manifest means the file was truncated.

    With verify_key=None the key embedded in the file is used (self-asserted).
    Malformed content is reported as a problem; only I/O errors (e.g. a missing file) raise OSError.
    """
    first, last = _edge_records(path)
    if first is not None and first["type"] == "export":
        return _verify_export(path, first, last, verify_key, progress)
    return _run_chain(
        _file_entries(path, frozenset({"checkpoint"})),
        _file_checkpoints(path),
        verify_key,
        progress,
        _ChainChecker(linked=True, anchored=True, seq_positions=False),
    )


class _ExportTracker:
    """Accumulates the digest of an export while the chain checker runs over it."""

    def __init__(self, manifest: ExportManifest | None) -> None:
        self.manifest = manifest
        self.digest = ExportDigest()
        self.first_position = 0
        self.last_position = 1

    def observe(self, position: int, entry: Entry) -> None:
        if self.digest.count == 0:
            self.first_position = position
        self.digest.add(entry)
        self.last_position = position
        if self.manifest is not None and self.digest.count > self.manifest.count:
            raise _Found(position, "inserted", f"entry beyond the {self.manifest.count} the manifest signed")


def _verify_export(
    path: str | os.PathLike[str],
    header: dict[str, Any],
    last: tuple[int, dict[str, Any]] | None,
    verify_key: VerifyKey | None,
    progress: Progress | None,
) -> VerifyReport:
    manifest_position, manifest = _read_manifest(last)
    contiguous = header.get("contiguous") is True
    key = verify_key or _header_key(header)
    signed = manifest is not None and key is not None and manifest.signature_ok(key)
    tracker = _ExportTracker(manifest if signed else None)
    entries = _file_entries(path, frozenset({"export", "checkpoint", "manifest"}))
    checkpoints = _file_checkpoints(path) if contiguous else iter(())
    report = _run_chain(entries, checkpoints, key, progress, _ChainChecker(contiguous, anchored=False, seq_positions=False),
                        tracker.observe)
    report.mode = "export"
    report.self_asserted_key = verify_key is None
    if report.ok:
        report.problem = _manifest_problem(manifest_position, manifest, tracker, header, key)
        report.ok = report.problem is None
        report.checkpoints_checked += int(report.ok)
    return report


def _header_key(header: dict[str, Any]) -> VerifyKey | None:
    try:
        return VerifyKey.from_raw_b64(str(header.get("public_key") or ""))
    except ValueError:
        return None


def _read_manifest(last: tuple[int, dict[str, Any]] | None) -> tuple[int, ExportManifest | None]:
    if last is None or last[1]["type"] != "manifest":
        return (last[0] + 1 if last else 1), None
    try:
        return last[0], ExportManifest.from_dict(last[1])
    except (KeyError, TypeError, ValueError):
        return last[0], None


def _manifest_problem(
    position: int,
    manifest: ExportManifest | None,
    tracker: _ExportTracker,
    header: dict[str, Any],
    key: VerifyKey | None,
) -> Problem | None:
    digest = tracker.digest
    if manifest is None:
        return Problem(position, "truncated", "the export has no signed manifest as its last line")
    if key is None or not manifest.signature_ok(key):
        return Problem(position, "bad_checkpoint_signature", "the export manifest's signature is invalid")
    if manifest.contiguous != (header.get("contiguous") is True):
        return Problem(1, "checkpoint_mismatch", "the export header disagrees with the signed manifest")
    if digest.count < manifest.count:
        return Problem(tracker.last_position + 1, "truncated",
                       f"{digest.count} entries present, the manifest signed {manifest.count}")
    if digest.count and manifest.contiguous and digest.first_seq != manifest.first_seq:
        return Problem(tracker.first_position, "deleted",
                       f"export starts at seq {digest.first_seq}, the manifest signed {manifest.first_seq}")
    if digest.hexdigest() != manifest.digest:
        return Problem(position, "checkpoint_mismatch", "the entries do not match the manifest's digest")
    return None
