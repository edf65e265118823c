"""Streaming exports for auditors: JSONL, CSV and FHIR R4 AuditEvent NDJSON.

Exports are generators of str chunks, so a year of audit log streams through a Flask
response in constant memory. Each export is covered by a signed manifest: format, count,
SHA-256 over the exported entries' Merkle leaf hashes in order, creation time, filter, the
signed tree checkpoint (size and root) the entries are leaves of, signer key id and public key.
Together with the leaf hash every exported entry carries, the manifest lets an auditor detect
edited, dropped, added or reordered rows, and ask for an inclusion proof of any row against the
named checkpoint.

JSONL exports embed everything: a header line announcing the export, the entries (seq and
event: the leaf data; plus the store's signed tree checkpoints when the export is the whole log
from seq 1, so `verify_file` rebuilds the tree and checks it against them) and the manifest as
the last line. CSV and FHIR have no room for it, so the caller ships `export_manifest(...)` as a
sidecar file or response header.

Long because the three formats are one contract: each writer sits beside the reader the verifier uses
to turn its rows back into entries, so a change to a format changes both in one place.
"""
from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import combinations
from typing import Any

from audit.entries import Entry, SigningKey, VerifyKey, canonical_json, parse_json
from audit.events import AuditEvent, format_time, parse_time, utcnow
from audit.filters import AuditFilter
from audit.tree_checkpoints import TreeCheckpoint

CHUNK_SIZE = 64 * 1024

CSV_COLUMNS: tuple[str, ...] = (
    "seq", "time", "actor_id", "actor_role", "action", "outcome", "patient_id", "resource_type",
    "resource_id", "reason", "source_ip", "user_agent", "request_id", "session_hash", "details",
    "leaf_hash",
)
"""CSV header, in order. `time` is ISO-8601 UTC with 'Z'; `details` is canonical JSON; empty
cells are None; `leaf_hash` is the entry's RFC 9162 leaf hash in base64. With these values an
entry's leaf hash can be recomputed from its row."""
NULLABLE_CSV_COLUMNS: tuple[str, ...] = (
    "actor_id", "actor_role", "patient_id", "resource_type", "resource_id", "reason", "source_ip", "user_agent",
    "request_id", "session_hash",
)

PORTAL_SYSTEM = "urn:patient-portal"
EXTENSION_BASE = "https://patient-portal.example/fhir/StructureDefinition/audit-entry"
FHIR_OUTCOMES = {"allowed": "0", "denied": "4", "error": "8"}
_VERB_CODES = {
    "C": {"create", "upload", "send", "register", "grant", "invite"},
    "R": {"read", "view", "download", "list", "open"},
    "U": {"update", "edit", "change", "rotate", "review"},
    "D": {"delete", "revoke", "remove", "erase"},
}
_AUTH_PREFIXES = ("signin", "signout", "login", "logout", "session", "mfa")


class ExportDigest:
    """Count and SHA-256 over the leaf hashes of an export's entries, accumulated while it streams."""

    def __init__(self) -> None:
        self.count = 0
        self.first_seq = 0
        self._sha = hashlib.sha256()

    def add(self, entry: Entry, leaf: bytes | None = None) -> None:
        """Count one entry; `leaf` is its leaf hash when the caller already has it."""
        if self.count == 0:
            self.first_seq = entry.seq
        self.count += 1
        self._sha.update(entry.leaf_hash() if leaf is None else leaf)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> ExportDigest:
        """Digest without exporting: lets a server send the manifest before the body (two passes)."""
        digest = cls()
        for entry in entries:
            digest.add(entry)
        return digest


@dataclass(frozen=True)
class ExportManifest:
    """The signed description of one export; `signature` covers every other field."""

    format: str
    count: int
    digest: str
    created: str
    filter: str
    contiguous: bool
    first_seq: int
    tree_size: int
    tree_root: str
    key_id: str
    public_key: str
    signature: str = field(default="", compare=False)

    def payload(self) -> bytes:
        values = asdict(self)
        del values["signature"]
        return canonical_json(values)

    def signature_ok(self, key: VerifyKey) -> bool:
        return self.key_id == key.key_id and key.verify(self.payload(), self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "manifest", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportManifest:
        values = {name: data[name] for name in cls.__dataclass_fields__}
        parse_time(values["created"])
        return cls(**values)


def export_manifest(
    fmt: str,
    source: ExportDigest | Iterable[Entry],
    signing_key: SigningKey,
    *,
    filter: AuditFilter | None = None,
    contiguous: bool | None = None,
    created: datetime | None = None,
    checkpoint: TreeCheckpoint | None = None,
) -> ExportManifest:
    """Sign a manifest for an export, from the digest filled while streaming or from the entries.

    `contiguous` (default: no filter) tells the verifier the export is the whole log from seq 1, so it
    rebuilds the tree. `checkpoint` is the signed tree checkpoint whose tree holds every exported entry
    (named by size and base64 root; none: size 0 and an empty root).
    """
    digest = source if isinstance(source, ExportDigest) else ExportDigest.of(source)
    unsigned = ExportManifest(
        format=fmt,
        count=digest.count,
        digest=digest.hexdigest(),
        created=format_time(created or utcnow()),
        filter=(filter or AuditFilter()).describe(),
        contiguous=_is_contiguous(filter, contiguous),
        first_seq=digest.first_seq,
        tree_size=checkpoint.tree_size if checkpoint else 0,
        tree_root=base64.b64encode(checkpoint.root_hash).decode("ascii") if checkpoint else "",
        key_id=signing_key.key_id,
        public_key=signing_key.public_raw_b64(),
    )
    return ExportManifest(**{**asdict(unsigned), "signature": signing_key.sign(unsigned.payload())})


def _is_contiguous(filter: AuditFilter | None, contiguous: bool | None) -> bool:
    if contiguous is not None:
        return contiguous
    return filter is None or filter.is_empty


def _chunked(lines: Iterable[str]) -> Iterator[str]:
    """Group small lines into ~64 KiB chunks: fewer writes, still constant memory."""
    buffer: list[str] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_SIZE:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def _json_line(record: dict[str, Any]) -> str:
    return canonical_json(record).decode("utf-8") + "\n"


def _counted(entries: Iterable[Entry], digest: ExportDigest) -> Iterator[Entry]:
    for entry in entries:
        digest.add(entry)
        yield entry


def export_jsonl(
    entries: Iterable[Entry],
    signing_key: SigningKey,
    *,
    filter: AuditFilter | None = None,
    checkpoints: Iterable[TreeCheckpoint] = (),
    contiguous: bool | None = None,
    checkpoint: TreeCheckpoint | None = None,
) -> Iterator[str]:
    """Self-verifying JSONL: export header, entries, then the signed manifest (naming `checkpoint`) last.

    For a contiguous export, pass the store's tree checkpoints (in the order they were written): those
    whose size falls inside the exported range follow the entry that completes their tree, so
    `verify_file` can rebuild the tree and check them.
    """
    contiguous = _is_contiguous(filter, contiguous)
    return _chunked(_jsonl_lines(entries, signing_key, filter, iter(checkpoints) if contiguous else iter(()),
                                 contiguous, checkpoint))


def _jsonl_lines(
    entries: Iterable[Entry],
    signing_key: SigningKey,
    filter: AuditFilter | None,
    checkpoints: Iterator[TreeCheckpoint],
    contiguous: bool,
    checkpoint: TreeCheckpoint | None,
) -> Iterator[str]:
    yield _json_line({
        "type": "export",
        "format": "jsonl",
        "contiguous": contiguous,
        "filter": (filter or AuditFilter()).describe(),
        "key_id": signing_key.key_id,
        "public_key": signing_key.public_raw_b64(),
    })
    digest = ExportDigest()
    pending = next(checkpoints, None)
    for entry in entries:
        record = entry.to_record()
        digest.add(entry, base64.b64decode(record["leaf_hash"]))
        yield _json_line(record)
        while pending is not None and pending.tree_size <= entry.seq:
            if pending.tree_size == entry.seq:
                yield _json_line(checkpoint_record(pending))
            pending = next(checkpoints, None)
    manifest = export_manifest("jsonl", digest, signing_key, filter=filter, contiguous=contiguous,
                               checkpoint=checkpoint)
    yield _json_line(manifest.to_dict())


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FREE_TEXT_COLUMNS = frozenset({"user_agent", "reason"})  # what a client or a person may have typed


def csv_cell(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (CSV injection).

    Text that already starts with an apostrophe gets one too, so ``csv_cell_value`` undoes it exactly.
    """
    return "'" + value if value.startswith((*FORMULA_PREFIXES, "'")) else value


def csv_cell_value(cell: str) -> str:
    """The original text of a ``csv_cell``: what re-hashing a CSV row needs for its free-text columns."""
    return cell[1:] if cell.startswith("'") else cell


def checkpoint_record(checkpoint: TreeCheckpoint) -> dict[str, Any]:
    """A signed tree checkpoint as a JSONL record (file store and JSONL exports); `created` is not signed."""
    return {"type": "checkpoint", "created": format_time(checkpoint.created), "note": checkpoint.note}


def leaf_hash_text(leaf: bytes) -> str:
    return base64.b64encode(leaf).decode("ascii")


def parse_leaf_hash(text: Any) -> bytes | None:
    """A leaf hash as exports write it (base64 of 32 bytes); None when it is anything else."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def entry_from_csv_row(row: Mapping[str, str]) -> Entry:
    """The entry a ``csv_row`` was written from: the inverse that re-hashing a CSV export needs.

    The CSV writes None and "" alike as an empty cell, so each empty cell of a text column is
    read as None unless reading some of them as "" is what gives the row's own leaf_hash
    (e.g. the empty role list of a user without portal roles). Raises ValueError (or KeyError)
    when the row cannot stand for any entry.
    """
    if not row["seq"].isdigit():
        raise ValueError(f"seq {row['seq']!r} is not a whole number")
    seq = int(row["seq"])
    values: dict[str, Any] = {column: row[column] or None for column in NULLABLE_CSV_COLUMNS}
    values.update({column: csv_cell_value(row[column]) or None for column in FREE_TEXT_COLUMNS})
    event = {**values, "action": row["action"], "outcome": row["outcome"], "time": row["time"],
             "details": _json_object(row["details"])}
    empty = [column for column in NULLABLE_CSV_COLUMNS if values[column] is None]
    claimed = parse_leaf_hash(row["leaf_hash"])
    first = None
    for count in range(len(empty) + 1):
        for blanks in combinations(empty, count):
            entry = Entry(seq, AuditEvent.from_dict({**event, **dict.fromkeys(blanks, "")}))
            if entry.leaf_hash() == claimed:
                return entry
            first = first or entry
    return first


def _json_object(text: str) -> dict[str, Any]:
    value = parse_json(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def csv_row(entry: Entry) -> dict[str, str]:
    """One CSV row: identifiers as text, details as canonical JSON, None as an empty cell.

    Free text (a user agent is whatever the client sent, even on a failed sign-in) is made safe to
    open in a spreadsheet; the JSON Lines export keeps every value exactly, for verification.
    """
    values = entry.event.to_dict()
    values["details"] = canonical_json(values["details"]).decode("utf-8")
    values.update(seq=entry.seq, leaf_hash=leaf_hash_text(entry.leaf_hash()))
    row = {column: "" if values[column] is None else str(values[column]) for column in CSV_COLUMNS}
    return {column: csv_cell(text) if column in FREE_TEXT_COLUMNS else text for column, text in row.items()}


def export_csv(entries: Iterable[Entry], digest: ExportDigest | None = None) -> Iterator[str]:
    """CSV with the CSV_COLUMNS header; fill `digest` to sign a manifest afterwards."""
    return _chunked(_csv_lines(_counted(entries, digest or ExportDigest())))


def _csv_lines(entries: Iterable[Entry]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    yield buffer.getvalue()
    for entry in entries:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(csv_row(entry))
        yield buffer.getvalue()


def fhir_action_code(action: str) -> str:
    """FHIR AuditEvent.action (C/R/U/D/E) from the verb in an action like 'chart.read'."""
    verb = action.rsplit(".", 1)[-1].lower()
    return next((code for code, verbs in _VERB_CODES.items() if verb in verbs), "E")


def _fhir_type(action: str) -> dict[str, str]:
    if action.split(".", 1)[0].lower() in _AUTH_PREFIXES:
        return {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114",
                "display": "User Authentication"}
    return {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
            "display": "RESTful Operation"}


def _fhir_agent(entry: Entry) -> dict[str, Any]:
    event = entry.event
    agent: dict[str, Any] = {"requestor": True}
    if event.actor_id is not None:
        agent["who"] = {"identifier": {"system": f"{PORTAL_SYSTEM}:user", "value": event.actor_id}}
    if event.actor_role is not None:
        agent["role"] = [{"coding": [{"system": f"{PORTAL_SYSTEM}:role", "code": event.actor_role}],
                          "text": event.actor_role}]
    if event.source_ip is not None:
        agent["network"] = {"address": event.source_ip, "type": "2"}
    return agent


def _detail(kind: str, value: Any) -> dict[str, str]:
    return {"type": kind, "valueString": str(value)}


def _fhir_entities(entry: Entry) -> list[dict[str, Any]]:
    event = entry.event
    entities = []
    if event.patient_id is not None:
        entities.append({
            "what": {"reference": f"Patient/{event.patient_id}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
    if event.resource_type is not None and event.resource_id is not None:
        entities.append({"what": {"reference": f"{event.resource_type}/{event.resource_id}"}})
    context = [("seq", entry.seq), ("leaf_hash", leaf_hash_text(entry.leaf_hash()))]
    context += [(name, getattr(event, name)) for name in ("request_id", "session_hash", "user_agent", "reason")]
    context += sorted(event.details.items())
    entities.append({
        "what": {"identifier": {"system": f"{PORTAL_SYSTEM}:audit-entry", "value": str(entry.seq)}},
        "description": "audit log entry",
        "detail": [_detail(name, value) for name, value in context if value is not None],
    })
    return entities


def fhir_audit_event(entry: Entry, observer: str = "patient-portal") -> dict[str, Any]:
    """A FHIR R4 AuditEvent resource (as JSON dict) for one entry; its seq and Merkle leaf hash ride along
    as extensions and as details of the audit-entry entity, and the hashed event itself (canonical
    JSON, extension #event) so a verifier can recompute the entry's leaf hash from the resource."""
    event = entry.event
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{entry.seq}",
        "extension": [
            {"url": f"{EXTENSION_BASE}#seq", "valueInteger": entry.seq},
            {"url": f"{EXTENSION_BASE}#leaf_hash", "valueString": leaf_hash_text(entry.leaf_hash())},
            {"url": f"{EXTENSION_BASE}#event", "valueString": canonical_json(event.to_dict()).decode("utf-8")},
        ],
        "type": _fhir_type(event.action),
        "subtype": [{"system": f"{PORTAL_SYSTEM}:audit-action", "code": event.action}],
        "action": fhir_action_code(event.action),
        "recorded": format_time(event.time),
        "outcome": FHIR_OUTCOMES[event.outcome],
        "agent": [_fhir_agent(entry)],
        "source": {"observer": {"display": observer}, "site": observer},
        "entity": _fhir_entities(entry),
    }
    if event.reason is not None:
        resource["outcomeDesc"] = event.reason
    return resource


def entry_from_fhir(resource: Mapping[str, Any]) -> tuple[Entry, bytes | None, str]:
    """The entry a ``fhir_audit_event`` resource was made from, the leaf hash it claims, and its observer.

    Read from the extensions; the rest of the resource is derived from them, so a
    verifier compares ``fhir_audit_event(entry, observer)`` with the resource. Raises
    ValueError, KeyError or TypeError when the resource is not one of ours.
    """
    if resource.get("resourceType") != "AuditEvent":
        raise ValueError("not a FHIR AuditEvent")
    extensions = {item["url"].removeprefix(f"{EXTENSION_BASE}#"): item for item in resource["extension"]}
    if "event" not in extensions:
        raise ValueError(f"no {EXTENSION_BASE}#event extension")
    seq = extensions["seq"]["valueInteger"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("seq must be an integer")
    event = AuditEvent.from_dict(_json_object(extensions["event"]["valueString"]))
    claimed = parse_leaf_hash(extensions["leaf_hash"]["valueString"]) if "leaf_hash" in extensions else None
    return Entry(seq, event), claimed, str(resource["source"]["observer"]["display"])


def export_fhir_ndjson(
    entries: Iterable[Entry], digest: ExportDigest | None = None, observer: str = "patient-portal"
) -> Iterator[str]:
    """FHIR Bulk-Data style NDJSON: one AuditEvent per line; fill `digest` for the manifest."""
    counted = _counted(entries, digest or ExportDigest())
    return _chunked(_json_line(fhir_audit_event(entry, observer)) for entry in counted)
