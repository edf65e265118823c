"""Exports: FHIR R4 AuditEvents validate, CSV parses with the documented columns, manifests sign the content."""
from __future__ import annotations

import base64
import csv
import io
import json
from datetime import datetime, timezone

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from audit import (
    CSV_COLUMNS,
    AuditEvent,
    AuditFilter,
    Entry,
    ExportDigest,
    SigningKey,
    TreeCheckpoint,
    canonical_json,
    export_csv,
    export_fhir_ndjson,
    export_manifest,
)
from audit.export import FREE_TEXT_COLUMNS, csv_cell_value, fhir_action_code
from audit.merkle import leaf_hash

KEY = SigningKey.generate()
WHEN = datetime(2024, 3, 1, 9, 0, 0, 42, tzinfo=timezone.utc)


def _log(events: list[AuditEvent]) -> list[Entry]:
    return [Entry(seq, event) for seq, event in enumerate(events, 1)]


def _entries() -> list[Entry]:
    return _log([
        AuditEvent(action="chart.read", outcome="allowed", actor_id="dr-1", actor_role="clinician", patient_id="p-9",
                   resource_type="Observation", resource_id="obs-3", source_ip="10.0.0.5", request_id="r-1",
                   details={"results": 3, "paged": False}, time=WHEN),
        AuditEvent(action="signin.failure", outcome="denied", reason="bad_credentials", source_ip="10.0.0.6",
                   user_agent='Mozilla/5.0 "quoted", with comma', time=WHEN),
        AuditEvent(action="message.send", outcome="error", actor_id="p-9", actor_role="patient", patient_id="p-9",
                   details={"note": "line1\nline2"}, time=WHEN),
    ])


def test_fhir_ndjson_validates_as_r4_audit_events():
    digest = ExportDigest()
    lines = "".join(export_fhir_ndjson(_entries(), digest)).splitlines()
    assert len(lines) == 3 and digest.count == 3
    resources = [FhirAuditEvent.model_validate_json(line) for line in lines]
    read, signin, send = resources
    assert (read.action, read.outcome, signin.outcome, send.outcome) == ("R", "0", "4", "8")
    assert read.agent[0].who.identifier.value == "dr-1"
    assert read.agent[0].role[0].text == "clinician"
    assert read.entity[0].what.reference == "Patient/p-9"
    assert read.entity[1].what.reference == "Observation/obs-3"
    assert signin.type.code == "110114" and signin.subtype[0].code == "signin.failure"
    details = {d.type: d.valueString for d in read.entity[-1].detail}
    assert base64.b64decode(details["leaf_hash"]) == _entries()[0].leaf_hash() and details["results"] == "3"
    assert read.recorded.isoformat().startswith("2024-03-01T09:00:00.000042")


def test_csv_parses_with_documented_columns_and_rows_rehash_to_their_leaf():
    entries = _entries()
    reader = csv.DictReader(io.StringIO("".join(export_csv(entries))))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    rows = list(reader)
    assert [int(row["seq"]) for row in rows] == [1, 2, 3]
    for row, entry in zip(rows, entries, strict=True):
        event = {name: (row[name] or None) for name in CSV_COLUMNS if name not in {"seq", "leaf_hash"}}
        event.update({name: csv_cell_value(row[name]) or None for name in FREE_TEXT_COLUMNS})
        event["details"] = json.loads(row["details"])
        leaf = leaf_hash(canonical_json({"seq": int(row["seq"]), "event": event}))
        assert leaf == base64.b64decode(row["leaf_hash"]) == entry.leaf_hash()


def test_csv_free_text_cannot_run_as_a_spreadsheet_formula_and_is_recoverable():
    typed = ['=HYPERLINK("http://evil.example","x")', "+1", "-cmd", "@SUM(A1)", "'quoted", "Mozilla/5.0"]
    entries = _log([AuditEvent(action="signin.failure", outcome="denied", user_agent=agent, reason="bad_state")
                      for agent in typed])
    rows = list(csv.DictReader(io.StringIO("".join(export_csv(entries)))))
    assert [row["user_agent"] for row in rows[:5]] == ["'" + agent for agent in typed[:5]]
    assert rows[5]["user_agent"] == "Mozilla/5.0"
    assert [csv_cell_value(row["user_agent"]) for row in rows] == typed


def test_manifest_signs_count_digest_filter_and_the_tree_checkpoint_it_names():
    entries = _entries()
    digest = ExportDigest()
    "".join(export_csv(entries, digest))
    only = AuditFilter(patient_id="p-9")
    checkpoint = TreeCheckpoint(1, 3, b"\x07" * 32, WHEN, "the signed note")
    manifest = export_manifest("csv", digest, KEY, filter=only, checkpoint=checkpoint)
    assert manifest == export_manifest("csv", entries, KEY, filter=only, checkpoint=checkpoint,
                                       created=datetime.fromisoformat(manifest.created.replace("Z", "+00:00")))
    assert manifest.signature_ok(KEY.verify_key) and not manifest.contiguous
    assert (manifest.count, manifest.filter, manifest.key_id) == (3, "patient_id=p-9", KEY.key_id)
    assert (manifest.tree_size, manifest.tree_root) == (3, base64.b64encode(b"\x07" * 32).decode())
    assert not type(manifest).from_dict({**manifest.to_dict(), "tree_size": 4}).signature_ok(KEY.verify_key)
    data = manifest.to_dict()
    assert data["type"] == "manifest" and data["public_key"] == KEY.public_raw_b64()
    tampered = type(manifest).from_dict({**data, "count": 2})
    assert not tampered.signature_ok(KEY.verify_key)
    assert not manifest.signature_ok(SigningKey.generate().verify_key)


@pytest.mark.parametrize("action, code", [
    ("chart.read", "R"), ("record.upload", "C"), ("profile.update", "U"), ("key.revoke", "D"), ("signin.success", "E"),
])
def test_fhir_action_codes(action, code):
    assert fhir_action_code(action) == code
