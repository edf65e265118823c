"""Streaming verification of audit logs and JSONL exports.

Checks, in one pass and constant memory (a one-entry look-ahead classifies problems):

* every entry's own hash (catches edited fields);
* chain links: seq increases by one and prev_hash equals the predecessor's hash
  (catches deleted, inserted and reordered entries);
* every checkpoint's Ed25519 signature and that its head hash is the hash of the entry at
  its count (catches forged checkpoints and a rewritten history);
* that the log reaches the count of every checkpoint (catches a truncated tail);
* that a checkpoint exists at every multiple of the store's `checkpoint_every` up to the
  head, as the writer signs them (catches checkpoints deleted so that the bare chain could
  be rewritten and re-hashed). This rule is a check of its own (`_RequiredCheckpoints`),
  independent of how entries are linked;
* for a store that keeps a Merkle tree (verify_store), in the same pass: that the stored tree
  is exactly the RFC 9162 tree of the entries (audit/tree_verify.py, which also verifies
  incrementally from a trusted tree head).

A hash chain cannot tell a forged entry appended *after* the last checkpoint from a real
one, and cannot reveal a truncated tail that no checkpoint covers: keep checkpoints (or
exports with their manifests) somewhere the database's writers cannot reach.

Files: JSON Lines store files and exports carry everything; CSV and FHIR NDJSON exports are
checked against their signed manifest (a sidecar file), each entry rebuilt from its row.

The first problem found is reported, with its position (seq for stores, line number for
files) and kind; verification never raises on bad input. A file that cannot be checked at
all (a format it does not know, a CSV export without its manifest) raises CannotVerify.

Long because every source a verifier accepts (a database, a store file, a JSON Lines, CSV or FHIR
export) feeds the one checking pass, and an auditor reads what is checked in one place.
"""
from __future__ import annotations

import base64
import binascii
import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.chain import GENESIS_HASH, Checkpoint, Entry, VerifyKey, parse_json
from audit.errors import CannotVerify, MalformedEntryError, Problem
from audit.export import (
    CSV_COLUMNS,
    ExportDigest,
    ExportManifest,
    csv_row,
    entry_from_csv_row,
    entry_from_fhir,
    fhir_audit_event,
)
from audit.store import DEFAULT_CHECKPOINT_EVERY, AuditStore, parse_jsonl_line, read_jsonl_lines
from audit.tree_verify import TreeChecker, TreeHead

KINDS = frozenset({
    "edited", "deleted", "inserted", "reordered", "truncated",
    "bad_checkpoint_signature", "checkpoint_mismatch", "checkpoint_missing", "malformed",
    "tree_mismatch", "inconsistent",
})
CSV_HEADER = ",".join(CSV_COLUMNS).encode("ascii")
MANIFEST_SUFFIX = ".manifest.json"
PROGRESS_EVERY = 1000

Positioned = tuple[int, Entry]
Progress = Callable[[int], Any]


@dataclass
class VerifyReport:
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    problem: Problem | None = None
    key_id: str | None = None
    self_asserted_key: bool = False
    mode: str = "chain"
    tree: TreeHead | None = None  # the Merkle tree head re-derived from the entries, when the store keeps a tree

    def summary(self) -> str:
        """The one-line result the CLI prints."""
        checked = f"{self.entries_checked} entries, {self.checkpoints_checked} signatures"
        if self.ok and self.tree is not None:
            checked += f"; Merkle tree of {self.tree.size} entries, root {self.tree.root.hex()[:16]}"
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
        self.signed_through = 0  # count of the last checkpoint that matched its entry
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
            self.signed_through = checkpoint.count
            self._pending = self._advance()

    def finish(self, last_seq: int, end_position: int) -> None:
        if self._pending is None:
            return
        position, checkpoint = self._pending
        raise _Found(end_position, "truncated",
                     f"log ends at seq {last_seq} but a checkpoint (position {position}) "
                     f"signed {checkpoint.count} entries")


class _RequiredCheckpoints:
    """The writer signs a checkpoint at every multiple of `every`, so each multiple must have one.

    Without this rule, deleting the checkpoints (which the database's owner can do) leaves a bare
    hash chain that anyone can rewrite and re-hash. It holds whatever links the entries (a hash
    chain today), so it is kept apart from the chain checks. `through` bounds it for a live log:
    entries appended after the checkpoints were read may still be getting theirs.
    """

    def __init__(self, every: int, through: int | None = None) -> None:
        if every < 1:
            raise ValueError("the checkpoint interval must be at least 1")
        self.every = every
        self.through = through

    def check(self, position: int, seq: int, signed_through: int) -> None:
        """`seq` was just accepted and every checkpoint up to it matched; the last one signed `signed_through`."""
        due = seq % self.every == 0 and (self.through is None or seq <= self.through)
        if due and signed_through != seq:
            raise _Found(position, "checkpoint_missing", f"checkpoint missing at seq {seq}")


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
    required: _RequiredCheckpoints | None,
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
            if required is not None:
                required.check(position, entry.seq, cursor.signed_through)
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
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    required_through: int | None = None,
) -> VerifyReport:
    """Verify a full chain from seq 1 against its checkpoints; positions in the report are seqs.

    `checkpoints` must come in the order they were written. With verify_key=None the key
    embedded in the first checkpoint is used and the report says it is self-asserted.
    A checkpoint must exist at every multiple of `checkpoint_every` (the writer's interval)
    up to `required_through` (default: every entry given). `progress(n)` is called with the
    number of entries checked since the last call (pass tqdm's `update`).
    """
    return _run_chain(
        ((entry.seq, entry) for entry in entries),
        ((checkpoint.count, checkpoint) for checkpoint in checkpoints),
        verify_key,
        progress,
        _ChainChecker(linked=True, anchored=True, seq_positions=True),
        _RequiredCheckpoints(checkpoint_every, required_through),
    )


def verify_store(
    store: AuditStore,
    verify_key: VerifyKey | None,
    progress: Progress | None = None,
    observe: Callable[[Entry], Any] | None = None,
) -> VerifyReport:
    """Verify everything in a store, which may be growing meanwhile; see verify().

    The head is read first, then every checkpoint, then the entries stream: each entry up to
    that head was written together with its checkpoints, so the store's `checkpoint_every`
    rule holds up to there. Checkpoints signed while the entries stream are left for the next
    run; all earlier ones are checked, so a log cut short is reported as truncated.
    ``observe`` sees each entry as it is handed to the verifier; trust what it saw only if
    the report is ok.
    """
    head_seq = store.head()[0]
    checkpoints = list(store.iter_checkpoints())  # one per checkpoint_every entries: small
    tree = TreeChecker(store) if store.keeps_tree else None
    entries = store.iter_entries()
    if observe is not None or tree is not None:
        entries = _observed(entries, [hook for hook in (tree and tree.add, observe) if hook is not None])
    report = verify(entries, checkpoints, verify_key, progress, checkpoint_every=store.checkpoint_every,
                    required_through=head_seq)
    stored = store.count_through(head_seq)
    if report.ok and stored != head_seq:
        report.ok = False
        report.problem = Problem(0, "inserted", f"{stored - head_seq} rows outside the chain (seq below 1): "
                                                "the log holds entries no verified chain accounts for")
    if tree is not None:
        tree_report = tree.finish()
        report.tree = tree_report.head
        if report.ok and not tree_report.ok:
            report.ok, report.problem = False, tree_report.problem
    return report


def _observed(entries: Iterable[Entry], observers: list[Callable[[Entry], Any]]) -> Iterator[Entry]:
    for entry in entries:
        for observe in observers:
            observe(entry)
        yield entry


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
    path: str | os.PathLike[str],
    verify_key: VerifyKey | None = None,
    progress: Progress | None = None,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    manifest: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Verify a JSONL store file or an export; positions in the report are line numbers.

    Store file (entry and checkpoint lines): the full chain from seq 1 and its checkpoints,
    as verify() does, with a checkpoint required at every multiple of `checkpoint_every`.

    JSONL export (first line {"type":"export"}, last line the signed manifest): each entry's
    own hash and increasing seqs always; when the manifest says the export is contiguous, also
    the chain links (from the first exported seq, and from genesis when that is 1) and the
    checkpoints it carries, required as for a store file. Then the manifest: signature, entry
    count, first seq and the digest over the entry hashes. A missing manifest means the file
    was truncated.

    CSV and FHIR NDJSON exports: each entry is rebuilt from its row (which must be written
    exactly as that entry would be) and checked as a JSONL export's entries are, against the
    signed manifest in `manifest`, by default FILE.manifest.json beside the file (the file the
    portal writes; the console's X-Audit-Manifest header value, base64, is accepted too).
    Problems with the manifest itself are reported at position 0. These exports carry no
    checkpoints.

    With verify_key=None the key embedded in the file or manifest is used (self-asserted).
    Malformed content is reported as a problem; I/O errors (e.g. a missing file) raise OSError,
    and a file that cannot be checked (unknown format, CSV or NDJSON without a manifest, a
    manifest of another export) raises CannotVerify.
    """
    kind, first_record = _sniff(path)
    sidecar = Path(manifest) if manifest is not None else Path(f"{os.fspath(path)}{MANIFEST_SUFFIX}")
    if kind in SIDECAR_FORMATS or (kind == "empty" and sidecar.exists()):
        return _verify_sidecar_export(path, kind, first_record, sidecar, verify_key, progress)
    if manifest is not None:
        raise CannotVerify(f"{os.fspath(path)} is not a CSV or FHIR NDJSON export: a separate manifest is only for those")
    if kind == "unknown":
        raise CannotVerify(f"{os.fspath(path)} is in no format this verifier can check (JSON Lines store file or "
                           "export, CSV or FHIR NDJSON export)")
    required = _RequiredCheckpoints(checkpoint_every)
    first, last = _edge_records(path)
    if first is not None and first["type"] == "export":
        return _verify_export(path, first, last, verify_key, progress, required)
    required.through = _last_seq(last)  # a file still being appended to: its later lines are checked next time
    return _run_chain(
        _file_entries(path, frozenset({"checkpoint"})),
        _file_checkpoints(path),
        verify_key,
        progress,
        _ChainChecker(linked=True, anchored=True, seq_positions=False),
        required,
    )


def _sniff(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any] | None]:
    """The file's kind from its first line ("jsonl", "csv", "fhir", "empty" or "unknown"), and that
    line as a JSON object when it is one. A damaged JSON Lines file is still "jsonl", so its damage
    is reported where it is."""
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first:
        return "empty", None
    if first.rstrip(b"\r\n") == CSV_HEADER:
        return "csv", None
    if not first.lstrip().startswith(b"{"):
        return "unknown", None
    try:
        record = parse_json(first)
    except ValueError:
        return "jsonl", None
    if isinstance(record, dict) and "resourceType" in record:
        return "fhir", record
    return "jsonl", record if isinstance(record, dict) else None


def _last_seq(last: tuple[int, dict[str, Any]] | None) -> int | None:
    """The seq of the newest entry, from the file's last record (an entry or its checkpoint)."""
    if last is None:
        return None
    value = last[1].get("seq" if last[1]["type"] == "entry" else "count")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


@dataclass(frozen=True)
class _SignedExport:
    """What an export's entries are checked against: its manifest (where it is), the contiguity it
    claims, and the key for the manifest's signature."""

    manifest_position: int
    manifest: ExportManifest | None
    contiguous: bool
    key: VerifyKey | None
    self_asserted: bool


def _check_export(
    export: _SignedExport,
    entries: Iterable[Positioned],
    checkpoints: Iterable[tuple[int, Checkpoint]],
    required: _RequiredCheckpoints | None,
    progress: Progress | None,
) -> VerifyReport:
    manifest = export.manifest
    signed = manifest is not None and export.key is not None and manifest.signature_ok(export.key)
    tracker = _ExportTracker(manifest if signed else None)
    checker = _ChainChecker(export.contiguous, anchored=False, seq_positions=False)
    report = _run_chain(entries, checkpoints, export.key, progress, checker, required, tracker.observe)
    report.mode = "export"
    report.self_asserted_key = export.self_asserted
    if report.ok:
        report.problem = _manifest_problem(export, tracker)
        report.ok = report.problem is None
        report.checkpoints_checked += int(report.ok)
    return report


def _verify_export(
    path: str | os.PathLike[str],
    header: dict[str, Any],
    last: tuple[int, dict[str, Any]] | None,
    verify_key: VerifyKey | None,
    progress: Progress | None,
    required: _RequiredCheckpoints,
) -> VerifyReport:
    manifest_position, manifest = _read_manifest(last)
    contiguous = header.get("contiguous") is True
    export = _SignedExport(manifest_position, manifest, contiguous, verify_key or _embedded_public_key(header),
                           self_asserted=verify_key is None)
    entries = _file_entries(path, frozenset({"export", "checkpoint", "manifest"}))
    if not contiguous:
        return _check_export(export, entries, iter(()), None, progress)
    return _check_export(export, entries, _file_checkpoints(path), required, progress)


def _embedded_public_key(record: dict[str, Any]) -> VerifyKey | None:
    """The public key an export header or manifest carries (self-asserted), if it is a usable one."""
    try:
        return VerifyKey.from_raw_b64(str(record.get("public_key") or ""))
    except ValueError:
        return None


def _read_manifest(last: tuple[int, dict[str, Any]] | None) -> tuple[int, ExportManifest | None]:
    if last is None or last[1]["type"] != "manifest":
        return (last[0] + 1 if last else 1), None
    try:
        return last[0], ExportManifest.from_dict(last[1])
    except (KeyError, TypeError, ValueError):
        return last[0], None


def _manifest_problem(export: _SignedExport, tracker: _ExportTracker) -> Problem | None:
    manifest, position, digest = export.manifest, export.manifest_position, tracker.digest
    if manifest is None:
        return Problem(position, "truncated", "the export has no signed manifest as its last line")
    if export.key is None or not manifest.signature_ok(export.key):
        return Problem(position, "bad_checkpoint_signature", "the export manifest's signature is invalid")
    if manifest.contiguous != export.contiguous:
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


# --------------------------------------------------------------------------- CSV and FHIR NDJSON exports


def _csv_entries(path: str | os.PathLike[str]) -> Iterator[Positioned]:
    """The rows of a CSV export as (line number, entry), after its header."""
    with open(path, encoding="utf-8", newline="") as handle:
        records = _csv_records(handle)
        header = next(records, None)
        if header is None or tuple(header[1]) != CSV_COLUMNS:
            raise MalformedEntryError(1, "the first line is not the CSV export's header")
        for position, cells in records:
            yield position, _csv_entry(position, cells)


def _csv_records(handle: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of each CSV record; unreadable text is MalformedEntryError at its line."""
    reader = csv.reader(handle)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MalformedEntryError(line, f"unreadable CSV: {exc}") from None
        yield line, cells
        line = reader.line_num + 1


def _csv_entry(position: int, cells: list[str]) -> Entry:
    if len(cells) != len(CSV_COLUMNS):
        raise MalformedEntryError(position, f"{len(cells)} cells, expected {len(CSV_COLUMNS)}")
    row = dict(zip(CSV_COLUMNS, cells, strict=True))
    try:
        entry = entry_from_csv_row(row)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEntryError(position, f"unreadable row: {exc}") from None
    if entry.hash_ok() and csv_row(entry) != row:  # e.g. a spreadsheet escape removed: same hash, live formula
        raise _Found(position, "edited", f"seq {entry.seq}: the row is not written as its entry would be")
    return entry


def _fhir_entries(path: str | os.PathLike[str]) -> Iterator[Positioned]:
    """The AuditEvent lines of a FHIR NDJSON export as (line number, entry)."""
    for number, line in read_jsonl_lines(path):
        try:
            resource = parse_json(line)
            entry, observer = entry_from_fhir(resource)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedEntryError(number, f"not an AuditEvent of this portal's export: {exc!r}") from None
        if entry.hash_ok() and fhir_audit_event(entry, observer) != resource:
            raise _Found(number, "edited", f"seq {entry.seq}: the resource differs from the entry its hash stands for")
        yield number, entry


SIDECAR_FORMATS: dict[str, tuple[str, Callable[[str | os.PathLike[str]], Iterator[Positioned]]]] = {
    "csv": ("a CSV export", _csv_entries),
    "fhir": ("a FHIR NDJSON export", _fhir_entries),
}


def _verify_sidecar_export(
    path: str | os.PathLike[str],
    kind: str,
    first_record: dict[str, Any] | None,
    manifest_path: Path,
    verify_key: VerifyKey | None,
    progress: Progress | None,
) -> VerifyReport:
    manifest = _load_manifest(path, manifest_path)
    fmt = manifest.format if kind == "empty" else kind
    if manifest.format != fmt or fmt not in SIDECAR_FORMATS:
        described = SIDECAR_FORMATS[fmt][0] if fmt in SIDECAR_FORMATS else "neither CSV nor FHIR NDJSON"
        raise CannotVerify(f"{manifest_path} is the manifest of a {manifest.format} export, but "
                           f"{os.fspath(path)} is {described}")
    if fmt == "fhir" and first_record is not None and not _carries_event(first_record):
        raise CannotVerify(f"{os.fspath(path)} is a FHIR export written before they carried the hashed event "
                           "(extension #event); verify the JSON Lines export of the same entries instead")
    key = verify_key or _embedded_public_key(manifest.to_dict())
    export = _SignedExport(0, manifest, manifest.contiguous, key, self_asserted=verify_key is None)
    return _check_export(export, SIDECAR_FORMATS[fmt][1](path), iter(()), None, progress)


def _load_manifest(path: str | os.PathLike[str], manifest_path: Path) -> ExportManifest:
    """The signed manifest as the portal writes it (JSON), or as the console's X-Audit-Manifest header (base64)."""
    try:
        text = manifest_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CannotVerify(f"no manifest for {os.fspath(path)}: {manifest_path} does not exist; pass the export's "
                           "signed manifest with --manifest FILE") from None
    try:
        if not text.startswith("{"):
            text = base64.b64decode(text, validate=True).decode("utf-8")
        return ExportManifest.from_dict(parse_json(text))
    except (binascii.Error, KeyError, TypeError, ValueError) as exc:
        raise CannotVerify(f"{manifest_path} is not an export manifest ({type(exc).__name__}: {exc})") from None


def _carries_event(resource: dict[str, Any]) -> bool:
    extensions = resource.get("extension")
    return isinstance(extensions, list) and any(
        isinstance(item, dict) and str(item.get("url", "")).endswith("#event") for item in extensions)
