"""Exports of the (filtered) log: CSV, JSON Lines and FHIR AuditEvent NDJSON, each with a signed manifest."""
from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit import (
    AuditFilter,
    ExportDigest,
    ExportManifest,
    TreeCheckpoint,
    export_csv,
    export_fhir_ndjson,
    export_jsonl,
    export_manifest,
)
from portal import services
from portal.access import record
from portal.actions import Action
from portal.exceptions import FilterError

EXPORT_FORMATS: dict[str, tuple[str, str]] = {  # format -> (mimetype, file extension)
    "csv": ("text/csv", "csv"),
    "jsonl": ("application/jsonl", "jsonl"),
    "fhir": ("application/fhir+ndjson", "ndjson"),
}


@dataclass(frozen=True)
class PreparedExport:
    """An export ready to stream: its exact entry set (bounded by seq), count and signed manifest, and the
    signed tree checkpoint whose tree holds every entry of it (the manifest names it)."""

    fmt: str
    filter: AuditFilter
    manifest: ExportManifest
    checkpoint: TreeCheckpoint

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def mimetype(self) -> str:
        return EXPORT_FORMATS[self.fmt][0]

    @property
    def filename(self) -> str:
        return f"audit-export-through-{self.filter.through}.{EXPORT_FORMATS[self.fmt][1]}"

    def manifest_json(self) -> str:
        return json.dumps(self.manifest.to_dict(), indent=2, sort_keys=True) + "\n"

    def manifest_header(self) -> str:
        """The signed manifest as base64 of its canonical JSON, for the X-Audit-Manifest header."""
        return base64.b64encode(json.dumps(self.manifest.to_dict(), sort_keys=True).encode()).decode("ascii")

    def audit_details(self, destination: str) -> dict[str, Any]:
        return {"format": self.fmt, "count": self.count, "filter": self.filter.describe()[:256],
                "digest": self.manifest.digest, "destination": destination}

    def chunks(self) -> Iterator[str]:
        """The export body, streamed in ~64 KiB chunks; JSONL ends with its own signed manifest."""
        store = services.audit_store()
        entries = store.iter_entries(filter=self.filter)
        if self.fmt == "jsonl":
            return export_jsonl(entries, services.audit_signing_key(), filter=self.filter,
                                checkpoints=store.tree_checkpoints(), checkpoint=self.checkpoint)
        if self.fmt == "csv":
            return export_csv(entries)
        return export_fhir_ndjson(entries)


def check_format(fmt: str | None) -> str:
    if fmt not in EXPORT_FORMATS:
        raise FilterError(f"'format' must be one of {', '.join(EXPORT_FORMATS)}.")
    return fmt


def prepare_export(filter: AuditFilter, fmt: str) -> PreparedExport:
    """Sign a tree checkpoint of the log now, fix the entry set (seq <= its size unless the filter already
    says less), count it and sign its manifest, naming that checkpoint, in one read pass; the export streams
    the same set in a second pass."""
    fmt = check_format(fmt)
    store = services.audit_store()
    checkpoint = store.sign_tree_checkpoint()
    size = checkpoint.tree_size
    through = size if filter.through is None else min(filter.through, size)
    filter = dataclasses.replace(filter, through=through)  # never beyond the checkpoint: body == manifest
    digest = ExportDigest.of(store.iter_entries(filter=filter))
    manifest = export_manifest(fmt, digest, services.audit_signing_key(), filter=filter, checkpoint=checkpoint)
    return PreparedExport(fmt, filter, manifest, checkpoint)


def export_to_file(filter: AuditFilter, fmt: str, output_path: Path | str, actor_role: str | None = None) -> int:
    """Write an export to a file (for the CLI), audited before it is written. CSV and FHIR get
    their signed manifest beside them as FILE.manifest.json. Returns the number of entries."""
    export = prepare_export(filter, fmt)
    record(Action.AUDIT_EXPORT, "allowed", actor_role=actor_role, reason="audit log export",
           details=export.audit_details("file"))
    path = Path(output_path)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(export.chunks())
    if fmt != "jsonl":
        Path(f"{path}.manifest.json").write_text(export.manifest_json(), encoding="utf-8")
    return export.count
