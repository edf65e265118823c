"""Signed, cosigned disclosure reports over a small SQLite audit log, as the portal issues them: the
specification of audit/report.py (tests/unit/audit/test_audit_report.py) and its attacks build on them."""
from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from audit import AuditEvent, SigningKey, SqlAuditStore, create_tables
from audit.note import ALG_COSIGNATURE_V1, Note, NoteSigner
from audit.report import CSV_COLUMNS, check_report, csv_row_of_line, prove_entries, sign_report
from tests.support.environment import ROOT

ORIGIN = "clinic.example/audit"
KEY = SigningKey.generate()
WITNESS = NoteSigner("witness.example/w1", SigningKey.generate(), ALG_COSIGNATURE_V1)
START = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
PATIENT = "patient-7"


def report_line(seq: int, moment: datetime) -> dict:
    return {"seq": seq, "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "who": "Dr. X", "role": "Clinician",
            "what": "Read chart", "purpose": "=care team", "break_glass": False}


def report_csv(lines: list[dict]) -> bytes:
    """The report's CSV download, as the portal writes it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row_of_line(line) for line in lines)
    return buffer.getvalue().encode("utf-8")


CSV = report_csv([report_line(i + 1, START + timedelta(minutes=i)) for i in range(0, 50, 7)])  # the store fixture's lines


def make_store(tmp_path) -> SqlAuditStore:
    """50 entries, every 7th (seq 1, 8, ..., 50) about PATIENT."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    create_tables(engine)
    store = SqlAuditStore(engine, KEY, origin=ORIGIN)
    store.append_many(AuditEvent(action="chart.read", outcome="allowed", actor_id=f"dr{i % 3}",
                                 patient_id=PATIENT if i % 7 == 0 else "someone-else",
                                 time=START + timedelta(minutes=i)) for i in range(50))
    return store


def cosigned(note: str) -> str:
    parsed = Note.parse(note)
    return parsed.with_signatures([WITNESS.sign(parsed.text, timestamp=1_780_000_000)]).encode()


def issued_report(store: SqlAuditStore) -> dict:
    """A report as the portal issues one: lines naming their entries, and the proof of each."""
    checkpoint = store.sign_tree_checkpoint()
    entries = store.accesses_to(PATIENT)
    proof = prove_entries(store, entries, cosigned(checkpoint.note), store.tree_signer().verifier, [WITNESS.verifier])
    lines = [report_line(entry.seq, entry.event.time) for entry in entries]
    return sign_report({"patient": {"id": PATIENT}, "digest": hashlib.sha256(CSV).hexdigest(), "lines": lines,
                        "proof": proof.to_json()}, store.tree_signer())


def pinned_check(report: dict, store: SqlAuditStore, **changes) -> dict:
    """Check a report as the log itself signed it, changes included: the proofs must catch what its key can sign."""
    keys = {"log_key": store.tree_signer().vkey(), "witness_keys": [WITNESS.vkey()], "csv": CSV}
    return check_report(sign_report(report, store.tree_signer()), **{**keys, **changes})


def verify_report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "verify-report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
