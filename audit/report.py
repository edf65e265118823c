"""Reports that prove themselves: each line's audit entry with an RFC 9162 inclusion proof against one
signed tree checkpoint (cosigned by the log's witnesses), checked offline with the public keys alone.

A report document (the JSON accounting of disclosures, or the proof file beside its CSV and PDF) is
a JSON object naming its patient (`patient.id`), with `lines` (each naming its entry's `seq` and `time`,
one line per entry) and a `proof`:

    {"format": "audit-report-proof/1",
     "checkpoint": "<C2SP signed note: the log's signature and the witnesses' cosignatures>",
     "log_key": "<the log's note verifier key>", "witness_keys": ["<witness verifier key>", ...],
     "entries": [{"leaf_index": i, "entry": {"seq": i + 1, "event": {...}}, "inclusion_path": ["<base64>", ...]}],
     "report_signature": "<the log's signed note over the SHA-256 of the whole report without this member>"}

The report signature binds what the entries cannot: the words of each line (names, roles, purposes),
which the portal renders from data the log does not hold.

Proving costs O(lines x log n) hash reads: nothing else of the log is read. What a proof shows is
that every line's entry is in the log the keys vouch for, unchanged; not that the log holds no
other entry about the patient (verifying the log as a whole, `python -m audit verify`, does that).
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from csv import DictReader
from csv import Error as CsvError
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from audit.entries import Entry, canonical_json
from audit.export import csv_cell
from audit.merkle import ProofError, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion
from audit.note import ALG_COSIGNATURE_V1, Checkpoint, Note, NoteError, NoteSigner, Verifier, sign_note
from audit.proofs import b64, decode_hash
from audit.store import AuditStore

FORMAT = "audit-report-proof/1"
MAX_REPORT_ENTRIES = 1_000_000


class EntryNotProven(ProofError):
    """An entry that is not, as read now, a leaf of the signed tree: the log or its tree was changed."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class ReportProof:
    """The `proof` member of a report: one checkpoint, the keys that signed it, each line's inclusion proof."""

    checkpoint: str
    log_key: str
    witness_keys: tuple[str, ...]
    entries: tuple[dict[str, Any], ...]
    tree_size: int
    root_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "tree_size": self.tree_size, "root_hash": b64(self.root_hash),
                "checkpoint": self.checkpoint, "log_key": self.log_key, "witness_keys": list(self.witness_keys),
                "entries": list(self.entries)}


def prove_entries(store: AuditStore, entries: Sequence[Entry], checkpoint: str, log: Verifier,
                  witnesses: Sequence[Verifier] = ()) -> ReportProof:
    """Inclusion proofs of `entries` in the tree the signed `checkpoint` names, each checked before it is
    handed out: the log's signature and every witness's cosignature must verify, the checkpoint must cover
    every entry, and each entry (as read now) must hash to a leaf whose path reaches the signed root.
    Raises EntryNotProven (a ProofError) naming the first entry that is not in the signed tree, ProofError
    for a checkpoint whose signatures do not verify, and TreeError for a hash missing from the stored tree."""
    body = _signed_body(checkpoint, log, witnesses)
    size, root = body.size, body.root_hash
    documents = []
    for entry in entries:
        if not 1 <= entry.seq <= size:
            raise EntryNotProven(entry.seq, f"entry seq {entry.seq} is not covered by the checkpoint of {size} entries")
        index = entry.seq - 1
        path = inclusion_proof(index, size, store.stored_hashes)
        try:
            verify_inclusion(index, size, entry.leaf_hash(), path, root)
        except ProofError as exc:
            raise EntryNotProven(entry.seq, f"entry seq {entry.seq} is not in the signed tree: {exc}") from None
        documents.append({"leaf_index": index, "entry": _entry_record(entry),
                          "inclusion_path": [b64(digest) for digest in path]})
    return ReportProof(checkpoint, log.vkey(), tuple(witness.vkey() for witness in witnesses), tuple(documents),
                       size, root)


def check_extends(store: AuditStore, older: str | None, older_size: int, newer: str, log: Verifier) -> None:
    """The tree of the signed checkpoint `newer` must extend the one of `older`, the checkpoint the log must
    hold of `older_size` entries (one at every multiple of the store's checkpoint_every): a consistency proof
    from the stored tree, O(log n). Raises ProofError when `older` is missing, forged or not a prefix: the
    checkpoints were deleted, or the entries under them rewritten and the tree rebuilt."""
    if older_size == 0:
        return
    if older is None:
        raise ProofError(f"checkpoint missing at tree size {older_size}: the log's signed checkpoints were deleted")
    old, new = _signed_body(older, log, []), _signed_body(newer, log, [])
    if old.size != older_size or new.size < old.size:
        raise ProofError(f"the checkpoint of {old.size} entries cannot anchor the tree of {new.size}")
    try:
        verify_consistency(old.size, new.size, store.consistency_proof(old.size, new.size), old.root_hash,
                           new.root_hash)
    except ProofError as exc:
        raise ProofError(f"the log's tree is not an extension of its signed checkpoint of {old.size} entries "
                         f"(the entries under it were changed): {exc}") from None


def report_statement(document: dict[str, Any], origin: str) -> str:
    """The note text the log signs to vouch for a whole report, its lines' words included: two lines (the
    report kind and the SHA-256 of the report's canonical JSON without this signature), so it can never
    parse as a checkpoint (origin, size, root)."""
    unsigned = {**document, "proof": {k: v for k, v in document.get("proof", {}).items() if k != "report_signature"}}
    return f"{origin} disclosure report\n{hashlib.sha256(canonical_json(unsigned)).hexdigest()}\n"


def sign_report(document: dict[str, Any], signer: NoteSigner) -> dict[str, Any]:
    """The report with `proof.report_signature`: the log's signed note over `report_statement`."""
    signature = sign_note(report_statement(document, signer.name), signer)
    return {**document, "proof": {**document["proof"], "report_signature": signature}}


def _check_report_signature(document: dict[str, Any], proof: dict[str, Any], log: Verifier) -> None:
    """The log signed this very report: its lines' words (who, role, what, purpose) are bound to it."""
    try:
        note = Note.parse(_text(proof.get("report_signature"), "proof.report_signature"))
    except NoteError as exc:
        raise ValueError(f"proof.report_signature cannot be read: {exc}") from None
    try:
        note.verify([log])
    except NoteError as exc:
        raise ProofError(f"the report's signature does not verify with the log key: {exc}") from None
    if note.text != report_statement(document, log.name):
        raise ProofError("the report was changed after the log signed it (its lines, period, patient or proofs)")


def _entry_record(entry: Entry) -> dict[str, Any]:
    return {"seq": entry.seq, "event": entry.event.to_dict()}


def _signed_body(checkpoint: str, log: Verifier, witnesses: Sequence[Verifier]) -> Checkpoint:
    """The checkpoint's body once the log's signature and each witness's cosignature verified."""
    try:
        note = Note.parse(checkpoint)
        body = Checkpoint.parse(note.text)
    except NoteError as exc:
        raise ValueError(f"the checkpoint cannot be read: {exc}") from None
    if body.origin != log.name:
        raise ProofError(f"the checkpoint's origin {body.origin!r} is not the log key's name {log.name!r}")
    try:
        note.verify([log, *witnesses])
    except NoteError as exc:
        raise ProofError(f"the checkpoint's signatures do not verify: {exc}") from None
    return body


# --------------------------------------------------------------------------- checking a report offline


@dataclass(frozen=True)
class ReportCheck:
    """What checking a report proved, and what it took on trust."""

    lines: int
    tree_size: int
    root_hash: bytes
    log_key: str
    witness_keys: tuple[str, ...]
    keys_pinned: bool
    csv_checked: bool
    witnesses_pinned: bool = False

    def summary(self) -> str:
        witnesses = (f"cosigned by {len(self.witness_keys)} witness(es): " + ", ".join(
            key.split("+")[0] for key in self.witness_keys)) if self.witness_keys else "not cosigned by any witness"
        if self.witness_keys and not self.witnesses_pinned:
            witnesses += " (keys named by the report itself, not pinned)"
        text = (f"OK: all {self.lines} lines are entries of the audit log {self.log_key.split('+')[0]}, in its "
                f"tree of {self.tree_size} entries with root {b64(self.root_hash)}, signed by the log and {witnesses}")
        return text + ("; the CSV matches the report's digest" if self.csv_checked else "")


def check_report(document: Any, log_key: str | None = None, witness_keys: Iterable[str] = (),
                 csv: bytes | None = None) -> ReportCheck:
    """Check a report document: the checkpoint's signatures (by the pinned keys when given, else by the
    keys the report names, which is self-asserted), every line's entry and its inclusion proof, and that
    lines and entries match one to one. ``csv`` is the CSV download the report's digest must match.

    Raises ValueError for a document that cannot be read or pinned keys that are not keys, and
    ProofError (a ValueError too) for one that does not prove what it says.
    """
    if not isinstance(document, dict):
        raise ValueError("a report is a JSON object")
    proof, lines = document.get("proof"), document.get("lines")
    if not isinstance(proof, dict) or proof.get("format") != FORMAT:
        raise ValueError(f"the report carries no proof in the {FORMAT} format")
    if not isinstance(lines, list):
        raise ValueError("the report has no list of lines")
    pinned_log, pinned_witnesses = log_key is not None, tuple(witness_keys)
    log = _verifier(log_key if pinned_log else proof.get("log_key"), "the log key")
    witnesses = _witnesses(proof, pinned_witnesses)
    if pinned_log and _text(proof.get("log_key"), "proof.log_key") != log.vkey():
        raise ProofError("the report names another log key than the one pinned")
    body = _signed_body(_text(proof.get("checkpoint"), "proof.checkpoint"), log, witnesses)
    size, root = proof.get("tree_size"), decode_hash(proof.get("root_hash"), "proof.root_hash")
    if not _whole(size) or size != body.size or root != body.root_hash:
        raise ProofError("proof.tree_size and proof.root_hash are not those of the signed checkpoint")
    patient_id, entries = _patient_id(document), _entry_documents(proof)
    _check_line_shapes(lines)
    _check_report_signature(document, proof, log)
    _check_entries(patient_id, lines, entries, body)
    _check_period(document, lines)
    if "count" in document and (not _whole(document["count"]) or document["count"] != len(lines)):
        raise ProofError(f"the report's count {document['count']!r} is not its number of lines ({len(lines)})")
    csv_checked = csv is not None
    if csv is not None and hashlib.sha256(csv).hexdigest() != document.get("digest"):
        raise ProofError("the CSV does not match the report's digest: it is not this report's CSV, or it was changed")
    if csv is not None:
        _check_csv(csv, lines)
    return ReportCheck(len(lines), body.size, body.root_hash, log.vkey(), tuple(w.vkey() for w in witnesses),
                       pinned_log, csv_checked, bool(pinned_witnesses))


def _check_csv(csv: bytes, lines: list[dict[str, Any]]) -> None:
    """The CSV must show the report's lines, row for row: its digest alone is the report's own claim."""
    try:
        rows = list(DictReader(io.StringIO(csv.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, CsvError) as exc:
        raise ValueError(f"the CSV cannot be read: {exc}") from None
    for number, line in enumerate(lines, 1):
        row = rows[number - 1] if number <= len(rows) else {}
        if [row.get(column) for column in CSV_COLUMNS] != csv_row_of_line(line):
            raise ProofError(f"the CSV's row {number} is not the report's line {number} (audit entry {line['seq']})")
    if len(rows) != len(lines):
        raise ProofError(f"the CSV has {len(rows)} rows, the report {len(lines)} lines")


CSV_COLUMNS = ("time_utc", "who", "role", "what", "purpose", "break_glass", "audit_seq")


def csv_row_of_line(line: dict[str, Any]) -> list[Any]:
    """A report line as its CSV download writes it (in CSV_COLUMNS order, free text spreadsheet-safe)."""
    texts = [line.get(name) for name in ("who", "role", "what", "purpose")]
    return [line.get("time"), *(csv_cell(text) if isinstance(text, str) else text for text in texts),
            "yes" if line.get("break_glass") is True else "no", str(line["seq"])]


def _check_period(document: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """Every line (its time already that of its proven entry) within the whole UTC days the report names."""
    if document.get("start") is None and document.get("end") is None:
        return
    try:
        first, last = (date.fromisoformat(_text(document.get(end), end)).isoformat() for end in ("start", "end"))
    except ValueError:
        raise ValueError("the report's start and end must be dates written YYYY-MM-DD") from None
    for number, line in enumerate(lines, 1):
        if not first <= line["time"][:10] <= last:
            raise ProofError(f"line {number} ({line['time']}) is outside the report's period {first}..{last}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _patient_id(document: dict[str, Any]) -> str:
    """The patient the report is about: every proven entry must be about them."""
    patient = document.get("patient")
    patient_id = patient.get("id") if isinstance(patient, dict) else None
    if not isinstance(patient_id, str) or not patient_id:
        raise ValueError("the report names no patient: patient.id must be a non-empty string")
    return patient_id


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def _verifier(vkey: Any, what: str) -> Verifier:
    try:
        return Verifier.from_vkey(_text(vkey, what))
    except NoteError as exc:
        raise ValueError(f"{what} is not a note verifier key: {exc}") from None


def _witnesses(proof: dict[str, Any], pinned: tuple[str, ...]) -> list[Verifier]:
    named = proof.get("witness_keys")
    if not isinstance(named, list):
        raise ValueError("proof.witness_keys must be a list of verifier keys")
    witnesses = [_verifier(key, "a witness key") for key in pinned or tuple(named)]
    for witness in witnesses:  # else the log's own key, or any plain key the log holds, could pose as its witness
        if witness.algorithm != ALG_COSIGNATURE_V1:
            refusal = ValueError if pinned else ProofError
            raise refusal(f"witness key {witness.key()} is not a witness's cosignature/v1 key (type 0x04)")
    return witnesses


@dataclass(frozen=True)
class _ProvenEntry:
    """One member of proof.entries, read but not yet checked."""

    position: int
    index: int
    entry: dict[str, Any]
    path: list[bytes]


def _entry_documents(proof: dict[str, Any]) -> list[_ProvenEntry]:
    """proof.entries, each of the right shape (else ValueError: the file is unusable, not tampered)."""
    entries = proof.get("entries")
    if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
        raise ValueError("proof.entries must be a list of objects")
    if len(entries) > MAX_REPORT_ENTRIES:
        raise ValueError(f"the report has more than {MAX_REPORT_ENTRIES} entries")
    return [_entry_document(position, item) for position, item in enumerate(entries)]


def _entry_document(position: int, item: dict[str, Any]) -> _ProvenEntry:
    index, entry, path = item.get("leaf_index"), item.get("entry"), item.get("inclusion_path")
    if not _whole(index) or not isinstance(entry, dict):
        raise ValueError(f"proof.entries[{position}] needs a whole leaf_index and an entry object")
    if not isinstance(path, list):
        raise ValueError(f"proof.entries[{position}].inclusion_path must be a list")
    hashes = [decode_hash(value, f"proof.entries[{position}].inclusion_path") for value in path]
    return _ProvenEntry(position, index, entry, hashes)


def _check_line_shapes(lines: list[Any]) -> None:
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or not _whole(line.get("seq")):
            raise ValueError(f"line {number} is not an object with a whole-number seq")


def _check_entries(patient_id: str, lines: list[Any], entries: list[_ProvenEntry], body: Checkpoint) -> None:
    by_seq: dict[int, dict[str, Any]] = {}
    for item in entries:
        event = _proven_event(item, body)
        if event.get("patient_id") != patient_id:
            raise ProofError(f"entry seq {item.index + 1} is about another patient than the report's")
        if event.get("outcome") != "allowed":
            raise ProofError(f"entry seq {item.index + 1} is a refused access ({event.get('outcome')!r}), "
                             "not a disclosure")
        by_seq[item.index + 1] = event
    if len(by_seq) != len(entries) or len(lines) != len(entries):
        raise ProofError(f"the report has {len(lines)} lines but {len(by_seq)} distinct proven entries")
    named: dict[int, int] = {}
    for number, line in enumerate(lines, 1):
        seq = _check_line(number, line, by_seq)
        if named.setdefault(seq, number) != number:  # two lines on one entry would leave another without a line
            raise ProofError(f"line {number} names audit entry {seq}, as line {named[seq]} does")


def _proven_event(item: _ProvenEntry, body: Checkpoint) -> dict[str, Any]:
    """The event of one proven entry, after its inclusion proof verified against the checkpoint."""
    position, index, entry = item.position, item.index, item.entry
    if not _whole(entry.get("seq")) or entry["seq"] != index + 1:
        raise ProofError(f"proof.entries[{position}]: the entry's seq {entry.get('seq')!r} is not leaf_index + 1 "
                         f"({index + 1})")
    if not isinstance(entry.get("event"), dict):
        raise ProofError(f"proof.entries[{position}] (entry seq {index + 1}) has no event object")
    try:
        verify_inclusion(index, body.size, leaf_hash(canonical_json(entry)), item.path, body.root_hash)
    except ProofError as exc:
        raise ProofError(f"entry seq {index + 1} is not in the signed tree (changed, or a forged proof): {exc}") from None
    return entry["event"]


def _check_line(number: int, line: dict[str, Any], by_seq: dict[int, dict[str, Any]]) -> int:
    """The seq of the proven entry the line shows."""
    seq = line["seq"]
    event = by_seq.get(seq)
    if event is None:
        raise ProofError(f"line {number} (audit entry {seq}) has no proven entry")
    if line.get("time") != _line_time(event.get("time")):
        raise ProofError(f"line {number}: its time {line.get('time')!r} is not its audit entry's")
    return seq


def _line_time(value: Any) -> str | None:
    """An event's time as report lines show it (whole seconds, UTC, Z)."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

