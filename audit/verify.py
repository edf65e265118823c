"""Verifying audit logs and exports: the SQL store, JSONL store files, and JSONL, CSV and FHIR exports.

Every source feeds the one checking pass of audit/checker.py, in one pass and constant memory:

* each entry's content against the leaf hash it claims (the stored tree's leaf, or the record's
  `leaf_hash`): an edited entry, or one moved to another seq;
* seqs consecutive from 1: a deleted, inserted or reordered entry;
* the RFC 9162 tree re-derived from the entries: for the SQL store, every stored node compared with
  it (the hashes proofs are served from), and the stored tree holding exactly the entries, no more;
* every signed tree checkpoint: its Ed25519 signature (C2SP signed note under the log's origin) and
  that its root is the root of the entries up to its size; the log reaches every checkpoint's size
  (a truncated tail);
* a checkpoint at every multiple of the writer's `checkpoint_every` up to the head, as the writer
  signs them: deleting the checkpoints, then rewriting and re-hashing the log, is caught;
* for the SQL store, that no row lies outside the tree (a seq below 1).

What only a witness can add (a tail deleted with its checkpoints, emptied tables) is audit/witnessed.py's.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import tree
from audit.checker import KINDS, Found, Leaf, Pass, SignedCheckpoint, StoredTree, pages_of
from audit.entries import Entry, VerifyKey, parse_json
from audit.errors import CannotVerify, MalformedEntryError, Problem
from audit.export import (
    CSV_COLUMNS,
    ExportDigest,
    ExportManifest,
    csv_row,
    entry_from_csv_row,
    entry_from_fhir,
    fhir_audit_event,
    parse_leaf_hash,
)
from audit.store import (
    DEFAULT_CHECKPOINT_EVERY,
    AuditStore,
    SqlAuditStore,
    parse_jsonl_line,
    read_jsonl_lines,
    record_checkpoint,
)
from audit.tree_checkpoints import TreeCheckpoint
from audit.tree_verify import TreeHead

__all__ = ["KINDS", "Problem", "VerifyReport", "verify", "verify_file", "verify_store"]

CSV_HEADER = ",".join(CSV_COLUMNS).encode("ascii")
MANIFEST_SUFFIX = ".manifest.json"

Progress = Callable[[int], Any]


@dataclass
class VerifyReport:
    ok: bool
    entries_checked: int
    checkpoints_checked: int
    problem: Problem | None = None
    key_id: str | None = None
    self_asserted_key: bool = False
    mode: str = "log"
    tree: TreeHead | None = None  # the Merkle tree head re-derived from the entries (trust it only when ok)
    roots: dict[int, bytes] = field(default_factory=dict)  # re-derived roots at the sizes asked for (roots_at)

    def summary(self) -> str:
        """The one-line result the CLI prints."""
        checked = f"{self.entries_checked} entries, {self.checkpoints_checked} signatures"
        if self.ok and self.tree is not None and self.mode == "log":
            root = base64.b64encode(self.tree.root).decode("ascii")
            checked += f"; Merkle tree of {self.tree.size} entries, root {root}"
        if self.ok:
            return f"OK: {self.mode} intact ({checked})"
        problem = self.problem
        return f"FAILED: {problem.kind} at position {problem.position}: {problem.message} (checked {checked})"


def _report(run: Pass, items: Iterable[Leaf], mode: str = "log", self_asserted: bool = False,
            pages: Iterable[list[Leaf]] | None = None) -> VerifyReport:
    outcome = run.run(pages_of(items) if pages is None else pages)
    return VerifyReport(ok=outcome.problem is None, entries_checked=outcome.entries,
                        checkpoints_checked=outcome.checkpoints, problem=outcome.problem, key_id=outcome.key_id,
                        self_asserted_key=self_asserted, mode=mode,
                        tree=TreeHead(outcome.size, outcome.root) if run.tree else None, roots=run.roots)


def _entry(entry: Entry) -> Entry:
    return entry


def _entry_leaves(entries: Iterable[Entry], claimed: Callable[[Entry], bytes | None]) -> Iterator[Leaf]:
    for entry in entries:
        yield Leaf(entry.seq, entry.seq, entry.leaf_hash(), claimed(entry), entry)


def _signed(checkpoints: Iterable[TreeCheckpoint], by_size: bool) -> list[SignedCheckpoint]:
    """A store's checkpoints for the pass; positioned at their size (stores) or at their line (files)."""
    return [SignedCheckpoint(checkpoint.tree_size if by_size else checkpoint.id, checkpoint.note,
                             checkpoint.tree_size, checkpoint.root_hash) for checkpoint in checkpoints]


def verify(
    entries: Iterable[Entry],
    checkpoints: Iterable[TreeCheckpoint],
    verify_key: VerifyKey | None,
    progress: Progress | None = None,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    required_through: int | None = None,
) -> VerifyReport:
    """Verify a whole log from seq 1 against its signed tree checkpoints; positions in the report are seqs.

    `checkpoints` in the order they were written. A checkpoint must exist at every multiple of
    `checkpoint_every` (the writer's interval) up to `required_through` (default: every entry given).
    `progress(n)` is called with the number of entries checked since the last call (pass tqdm's `update`).
    """
    run = Pass(_entry, _signed(checkpoints, by_size=True), verify_key, required_every=checkpoint_every,
               required_through=required_through, progress=progress)
    return _report(run, _entry_leaves(entries, lambda entry: None))


def verify_store(
    store: AuditStore,
    verify_key: VerifyKey | None,
    progress: Progress | None = None,
    observe: Callable[[Entry], Any] | None = None,
    roots_at: Iterable[int] = (),
) -> VerifyReport:
    """Verify everything in a store, which may be growing meanwhile: the module docstring's checks.

    The head, the tree size and the newest checkpoint are read in one snapshot; the entries up to that
    head stream, and exactly the checkpoints up to that one are checked (those signed meanwhile are left
    for the next run), so a log cut short is reported as truncated. ``observe`` sees each entry as it is
    handed to the verifier; trust what it saw only if the report is ok. The report keeps the roots of the
    re-derived tree at the sizes in ``roots_at`` (what a witness's checkpoint is compared with, without a
    second pass over the log).
    """
    if not isinstance(store, SqlAuditStore):
        return _verify_other_store(store, verify_key, progress, observe)
    with store.engine.connect() as conn:
        head, size, newest_checkpoint = tree.snapshot(conn)
    checkpoints = [checkpoint for checkpoint in store.tree_checkpoints() if checkpoint.id <= newest_checkpoint]
    through = max(head, size)
    stored = StoredTree(size, lambda start, end: tree.interior_hashes(store.engine, start, end))
    run = Pass(tree.row_entry, _signed(checkpoints, by_size=True), verify_key,
               required_every=store.checkpoint_every, required_through=head, stored=stored, progress=progress,
               observe=None if observe is None else lambda item: observe(tree.row_entry(item.source)),
               roots_at=frozenset(roots_at))
    report = _report(run, (), pages=_row_pages(store, through))
    counted = store.count_through(through)
    if report.ok and counted != through:
        report.ok = False
        report.problem = Problem(0, "inserted", f"{counted - through} rows outside the tree (seq below 1): "
                                                "the log holds entries no verified tree accounts for")
    return report


def _row_pages(store: SqlAuditStore, through: int) -> Iterator[list[Leaf]]:
    """Each row as a Leaf positioned at its seq; built with tuple.__new__, which skips the Python-level
    constructor of a named tuple (one per entry of the log)."""
    new = tuple.__new__
    for page in tree.leaf_pages(store.engine, through):
        yield [new(Leaf, item) for item in page]


def _verify_other_store(store: AuditStore, verify_key: VerifyKey | None, progress: Progress | None,
                        observe: Callable[[Entry], Any] | None) -> VerifyReport:
    head = store.head_seq()
    run = Pass(_entry, _signed(store.tree_checkpoints(), by_size=True), verify_key,
               required_every=store.checkpoint_every, required_through=head, progress=progress,
               observe=None if observe is None else lambda item: observe(item.source))
    return _report(run, _entry_leaves(store.iter_entries(), lambda entry: None))


def _file_entries(path: str | os.PathLike[str], skip: frozenset[str]) -> Iterator[Leaf]:
    """Entry lines of a JSONL file as items positioned at their line; other known record types are skipped."""
    for number, line in read_jsonl_lines(path):
        record = parse_jsonl_line(number, line)
        kind = record["type"]
        if kind == "entry":
            entry = _entry_from_record(number, record)
            yield Leaf(number, entry.seq, entry.leaf_hash(), parse_leaf_hash(record.get("leaf_hash")), entry)
        elif kind not in skip:
            raise MalformedEntryError(number, f"unexpected record type {kind!r}")


def _entry_from_record(number: int, record: dict[str, Any]) -> Entry:
    try:
        return Entry.from_record(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEntryError(number, f"unreadable entry: {exc!r}") from None


def _file_checkpoints(path: str | os.PathLike[str]) -> list[SignedCheckpoint]:
    """Checkpoint lines, positioned at their line. Unparseable lines are left to the entry pass, which
    reports them at the right point in the stream; an unreadable checkpoint is refused when reached."""
    checkpoints = []
    for number, line in read_jsonl_lines(path):
        try:
            record = parse_jsonl_line(number, line)
        except MalformedEntryError:
            continue
        if record["type"] == "checkpoint":
            note = record.get("note")
            checkpoints.append(SignedCheckpoint(number, note if isinstance(note, str) else ""))
    return checkpoints


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

    Store file (entry and checkpoint lines): the whole log from seq 1, rebuilt into its tree and
    checked against its signed tree checkpoints, as verify() does, with a checkpoint required at every
    multiple of `checkpoint_every`. Without `verify_key` its checkpoints cannot be checked.

    JSONL export (first line {"type":"export"}, last line the signed manifest): each entry's leaf hash
    and increasing seqs always; when the manifest says the export is contiguous (the whole log from
    seq 1), also the tree rebuilt from the entries and checked against the checkpoints it carries,
    required as for a store file, and against the checkpoint the manifest names. Then the manifest:
    signature, entry count, first seq and the digest over the leaf hashes. A missing manifest means
    the file was truncated.

    CSV and FHIR NDJSON exports: each entry is rebuilt from its row (which must be written
    exactly as that entry would be) and checked as a JSONL export's entries are, against the
    signed manifest in `manifest`, by default FILE.manifest.json beside the file (the file the
    portal writes; the console's X-Audit-Manifest header value, base64, is accepted too).
    Problems with the manifest itself are reported at position 0. These exports carry no
    checkpoints.

    With verify_key=None the key embedded in an export or its manifest is used (self-asserted).
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
    first, last = _edge_records(path)
    if first is not None and first["type"] == "export":
        return _verify_export(path, first, last, verify_key, progress, checkpoint_every)
    run = Pass(_entry, _file_checkpoints(path), verify_key, seq_positions=False, required_every=checkpoint_every,
               required_through=_last_seq(last), progress=progress)  # a file still being appended to: its later
    return _report(run, _file_entries(path, frozenset({"checkpoint"})))  # lines are checked next time


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
    """The seq of the newest entry, from the file's last record (an entry or the checkpoint that follows it)."""
    if last is None:
        return None
    if last[1]["type"] == "checkpoint":
        try:
            return record_checkpoint(last[0], last[1]).tree_size
        except ValueError:
            return None
    value = last[1].get("seq")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _ExportTracker:
    """Accumulates the digest of an export while the pass runs over it."""

    def __init__(self, manifest: ExportManifest | None) -> None:
        self.manifest = manifest
        self.digest = ExportDigest()
        self.first_position = 0
        self.last_position = 1
        self.last_seq = 0

    def observe(self, item: Leaf) -> None:
        if self.digest.count == 0:
            self.first_position = item.position
        self.digest.add(item.source, item.leaf)
        self.last_position, self.last_seq = item.position, item.seq
        if self.manifest is not None and self.digest.count > self.manifest.count:
            raise Found(item.position, "inserted", f"entry beyond the {self.manifest.count} the manifest signed")


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
    entries: Iterable[Leaf],
    checkpoints: Sequence[SignedCheckpoint],
    required_every: int | None,
    progress: Progress | None,
) -> VerifyReport:
    manifest = export.manifest
    signed = manifest is not None and export.key is not None and manifest.signature_ok(export.key)
    tracker = _ExportTracker(manifest if signed else None)
    run = Pass(_entry, checkpoints, export.key, tree=export.contiguous, seq_positions=False,
               required_every=required_every, observe=tracker.observe, progress=progress)
    report = _report(run, entries, mode="export", self_asserted=export.self_asserted)
    if report.ok:
        report.problem = _manifest_problem(export, tracker, report.tree)
        report.ok = report.problem is None
        report.checkpoints_checked += int(report.ok)
    return report


def _verify_export(
    path: str | os.PathLike[str],
    header: dict[str, Any],
    last: tuple[int, dict[str, Any]] | None,
    verify_key: VerifyKey | None,
    progress: Progress | None,
    checkpoint_every: int,
) -> VerifyReport:
    manifest_position, manifest = _read_manifest(last)
    contiguous = header.get("contiguous") is True
    export = _SignedExport(manifest_position, manifest, contiguous, verify_key or _embedded_public_key(header),
                           self_asserted=verify_key is None)
    entries = _file_entries(path, frozenset({"export", "checkpoint", "manifest"}))
    if not contiguous:
        return _check_export(export, entries, (), None, progress)
    return _check_export(export, entries, _file_checkpoints(path), checkpoint_every, progress)


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


def _manifest_problem(export: _SignedExport, tracker: _ExportTracker, rebuilt: TreeHead | None) -> Problem | None:
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
    return _named_checkpoint_problem(manifest, position, tracker, rebuilt)


def _named_checkpoint_problem(manifest: ExportManifest, position: int, tracker: _ExportTracker,
                              rebuilt: TreeHead | None) -> Problem | None:
    """The tree checkpoint the manifest names must hold every exported entry; a contiguous export of as many
    entries is that whole tree, so its rebuilt root must be the named root (a shorter one is a prefix of it:
    a consistency proof from the log shows that)."""
    if not manifest.tree_size or not tracker.digest.count:
        return None  # it names no checkpoint, or there is nothing it would hold
    if tracker.last_seq > manifest.tree_size:
        return Problem(position, "checkpoint_mismatch", f"the export holds seq {tracker.last_seq}, beyond the "
                                                        f"tree of {manifest.tree_size} the manifest names")
    if manifest.contiguous and rebuilt is not None and rebuilt.size == manifest.tree_size:
        named = parse_leaf_hash(manifest.tree_root)
        if rebuilt.size != manifest.tree_size or rebuilt.root != named:
            return Problem(position, "checkpoint_mismatch", f"the entries are not the tree of {manifest.tree_size} "
                                                            "entries, with the root, that the manifest names")
    return None


# --------------------------------------------------------------------------- CSV and FHIR NDJSON exports


def _csv_entries(path: str | os.PathLike[str]) -> Iterator[Leaf]:
    """The rows of a CSV export as (line number, entry), after its header."""
    with open(path, encoding="utf-8", newline="") as handle:
        records = _csv_records(handle)
        header = next(records, None)
        if header is None or tuple(header[1]) != CSV_COLUMNS:
            raise MalformedEntryError(1, "the first line is not the CSV export's header")
        for position, cells in records:
            entry, claimed = _csv_entry(position, cells)
            yield Leaf(position, entry.seq, entry.leaf_hash(), claimed, entry)


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


def _csv_entry(position: int, cells: list[str]) -> tuple[Entry, bytes | None]:
    if len(cells) != len(CSV_COLUMNS):
        raise MalformedEntryError(position, f"{len(cells)} cells, expected {len(CSV_COLUMNS)}")
    row = dict(zip(CSV_COLUMNS, cells, strict=True))
    try:
        entry = entry_from_csv_row(row)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEntryError(position, f"unreadable row: {exc}") from None
    claimed = parse_leaf_hash(row["leaf_hash"])
    if entry.leaf_hash() == claimed and csv_row(entry) != row:  # e.g. a spreadsheet escape removed: a live formula
        raise Found(position, "edited", f"seq {entry.seq}: the row is not written as its entry would be")
    return entry, claimed


def _fhir_entries(path: str | os.PathLike[str]) -> Iterator[Leaf]:
    """The AuditEvent lines of a FHIR NDJSON export as (line number, entry)."""
    for number, line in read_jsonl_lines(path):
        try:
            resource = parse_json(line)
            entry, claimed, observer = entry_from_fhir(resource)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedEntryError(number, f"not an AuditEvent of this portal's export: {exc!r}") from None
        if entry.leaf_hash() == claimed and fhir_audit_event(entry, observer) != resource:
            raise Found(number, "edited", f"seq {entry.seq}: the resource differs from the entry its hash stands for")
        yield Leaf(number, entry.seq, entry.leaf_hash(), claimed, entry)


SIDECAR_FORMATS: dict[str, tuple[str, Callable[[str | os.PathLike[str]], Iterator[Leaf]]]] = {
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
    return _check_export(export, SIDECAR_FORMATS[fmt][1](path), (), None, progress)


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
