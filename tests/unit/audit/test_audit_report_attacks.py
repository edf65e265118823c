"""Hostile report documents against `check_report` and `python -m audit verify-report`: documents that must not be
accepted although every proof in them verifies, and documents that must be refused with exit 1 or 2, never a
traceback. Built on the signed, cosigned report of tests/unit/audit/test_audit_report.py."""
from __future__ import annotations

import hashlib
import json

import pytest

from audit import AuditEvent, ProofError
from audit.note import Note, NoteSigner
from audit.report import check_report, prove_entries
from tests.support.signed_reports import (
    CSV,
    KEY,
    PATIENT,
    WITNESS,
    issued_report,
    make_store,
    pinned_check,
    report_csv,
    report_line,
    verify_report_cli,
)


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path)


def _second_line_names_the_first_entry(report: dict) -> None:
    report["lines"][1] = dict(report["lines"][0])


def test_two_lines_naming_one_entry_cannot_hide_another_entry(store):
    """Every line checks out and the counts agree, yet entry 8 has no line: the reader never sees that access."""
    report = issued_report(store)
    _second_line_names_the_first_entry(report)
    with pytest.raises(ProofError, match="line 2 names audit entry 1, as line 1 does"):
        pinned_check(report, store, csv=None)


NO_PATIENT = {
    "no patient": lambda r: r.pop("patient"),
    "patient without id": lambda r: r["patient"].pop("id"),
    "patient as a list": lambda r: r.update(patient=[PATIENT]),
    "patient id as a number": lambda r: r["patient"].update(id=7),
    "patient id empty": lambda r: r["patient"].update(id=""),
}


@pytest.mark.parametrize("change", NO_PATIENT.values(), ids=NO_PATIENT.keys())
def test_a_report_that_names_no_patient_is_unreadable(store, change):
    """Without patient.id nothing tied the entries to one patient: any patient's proven entries passed."""
    report = issued_report(store)
    change(report)
    with pytest.raises(ValueError, match="names no patient") as raised:
        pinned_check(report, store)
    assert not isinstance(raised.value, ProofError)


def test_a_line_may_not_point_at_another_patients_entry_by_dropping_the_patient(store):
    """A proven entry of another patient, with its line, slipped into a report whose patient.id was removed."""
    report = issued_report(store)
    other = next(entry for entry in store.iter_entries() if entry.event.patient_id != PATIENT)
    proof = prove_entries(store, [other], report["proof"]["checkpoint"], store.tree_signer().verifier,
                          [WITNESS.verifier])
    report["proof"]["entries"].append(proof.entries[0])
    report["lines"].append(report_line(other.seq, other.event.time))
    del report["patient"]["id"]
    with pytest.raises(ValueError, match="names no patient"):
        pinned_check(report, store, csv=None)
    report["patient"]["id"] = PATIENT
    with pytest.raises(ProofError, match=f"entry seq {other.seq} is about another patient"):
        pinned_check(report, store, csv=None)


@pytest.mark.parametrize("seq", [True, 1.0], ids=["bool", "float"])
def test_a_line_seq_must_be_a_whole_number(store, seq):
    report = issued_report(store)
    report["lines"][0]["seq"] = seq
    with pytest.raises(ValueError, match="line 1 is not an object with a whole-number seq"):
        pinned_check(report, store, csv=None)


@pytest.mark.parametrize("tree_size", [50.0, "50"], ids=["float", "string"])
def test_proof_tree_size_must_be_the_checkpoints_whole_number(store, tree_size):
    report = issued_report(store)
    report["proof"]["tree_size"] = tree_size
    with pytest.raises(ProofError, match="tree_size"):
        pinned_check(report, store)


@pytest.mark.parametrize("count", [999, 8.0, True], ids=["too many", "float", "bool"])
def test_the_reports_count_must_be_its_number_of_lines(store, count):
    report = issued_report(store)
    report["count"] = count
    with pytest.raises(ProofError, match="count"):
        pinned_check(report, store)


def test_the_logs_own_key_cannot_stand_for_a_witness(store):
    """Pinned as --witness-key, or named by the report: the summary said "cosigned by 1 witness" with none."""
    log_key = store.tree_signer().vkey()
    with pytest.raises(ValueError, match="not a witness's cosignature/v1 key"):
        pinned_check(issued_report(store), store, witness_keys=[log_key])
    report = issued_report(store)
    report["proof"]["witness_keys"] = [log_key]
    with pytest.raises(ProofError, match="not a witness's cosignature/v1 key"):
        check_report(report, log_key)


def test_a_plain_key_the_log_holds_cannot_pose_as_its_witness(store):
    """The log's operator signs the checkpoint again with a plain key named like the real witness."""
    impostor = NoteSigner("witness.example/w1", KEY)
    report = issued_report(store)
    note = Note.parse(report["proof"]["checkpoint"])
    report["proof"]["checkpoint"] = note.with_signatures([impostor.sign(note.text)]).encode()
    report["proof"]["witness_keys"] = [impostor.vkey()]
    with pytest.raises(ProofError, match="witness.example/w1"):
        check_report(report, store.tree_signer().vkey())


def test_witnesses_taken_from_the_report_are_said_to_be_unpinned(store):
    """With the log key pinned and no --witness-key, the witness names come from the report: the summary says so."""
    checked = check_report(issued_report(store), store.tree_signer().vkey())
    assert checked.keys_pinned and not checked.witnesses_pinned
    assert "(keys named by the report itself, not pinned)" in checked.summary()
    assert "not pinned" not in pinned_check(issued_report(store), store).summary()


CSV_EDITS = {
    "a row removed, digest updated": lambda lines: lines[1:],
    "a name changed, digest updated": lambda lines: [{**lines[0], "who": "Nobody"}, *lines[1:]],
    "rows reordered, digest updated": lambda lines: lines[::-1],
}


@pytest.mark.parametrize("edit", CSV_EDITS.values(), ids=CSV_EDITS.keys())
def test_a_csv_edited_together_with_the_digest_is_refused(store, edit):
    """The digest is the report's own claim: the CSV must show the report's proven lines row for row."""
    report = issued_report(store)
    edited = report_csv(edit(report["lines"]))
    report["digest"] = hashlib.sha256(edited).hexdigest()
    with pytest.raises(ProofError, match="CSV"):
        pinned_check(report, store, csv=edited)


def test_the_portals_csv_of_the_lines_passes(store):
    assert pinned_check(issued_report(store), store, csv=CSV).csv_checked


def test_a_lines_text_rewritten_is_refused(store):
    """Only seq and time of a line can be compared with its entry: "what" and "purpose" are the portal's words. The
    log's signature over the whole report binds them: rewriting them after issue is refused."""
    report = issued_report(store)
    report["lines"][0].update(what="Printed a leaflet", purpose="patient asked")
    with pytest.raises(ProofError, match="changed after the log signed it"):
        check_report(report, store.tree_signer().vkey(), [WITNESS.vkey()])


UNHASHABLE_SEQS = {"a list": [1], "an object": {"a": 1}}


@pytest.mark.parametrize("seq", UNHASHABLE_SEQS.values(), ids=UNHASHABLE_SEQS.keys())
def test_a_line_seq_that_is_a_container_is_exit_2_not_a_traceback(store, tmp_path, seq):
    """It raised TypeError: a traceback, and Python's exit status 1, which reads as "tampered"."""
    report = issued_report(store)
    report["lines"][0]["seq"] = seq
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    checked = verify_report_cli(str(path), "--log-key", store.tree_signer().vkey(), "--witness-key", WITNESS.vkey())
    assert checked.returncode == 2 and "Traceback" not in checked.stderr, checked.stderr
    assert checked.stderr.startswith("error: line 1 is not an object with a whole-number seq")


HOSTILE_FILES = {
    "nested too deeply": ("[" * 100_000 + "]" * 100_000).encode(),
    "not UTF-8": b"\xff\xfe{}",
    "a number of 5000 digits": b'{"proof": ' + b"9" * 5000 + b"}",
    "a lone surrogate": b'{"proof": "\\ud800"}',
}


@pytest.mark.parametrize("content", HOSTILE_FILES.values(), ids=HOSTILE_FILES.keys())
def test_hostile_files_are_exit_2_naming_the_problem(tmp_path, content):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    checked = verify_report_cli(str(path))
    assert checked.returncode == 2 and checked.stderr.startswith("error: ") and "Traceback" not in checked.stderr


def test_a_directory_or_a_missing_file_is_exit_2(tmp_path):
    for args in ([str(tmp_path)], [str(tmp_path / "missing.json")]):
        checked = verify_report_cli(*args)
        assert checked.returncode == 2 and checked.stderr.startswith("error: "), checked.stderr


def test_a_refused_access_of_the_patient_cannot_be_listed_as_a_disclosure(store):
    """A proven entry of the patient whose outcome is "denied" is no disclosure: the portal lists allowed ones."""
    denied = store.append(AuditEvent(action="chart.read", outcome="denied", patient_id=PATIENT))
    report = issued_report(store)
    checkpoint = report["proof"]["checkpoint"]
    report["proof"]["entries"].append(
        prove_entries(store, [denied], checkpoint, store.tree_signer().verifier, [WITNESS.verifier]).entries[0])
    report["lines"].append(report_line(denied.seq, denied.event.time))
    with pytest.raises(ProofError, match=f"entry seq {denied.seq} is a refused access"):
        pinned_check(report, store, csv=None)


def test_lines_outside_the_reports_period_are_refused(store):
    report = issued_report(store)  # the fixture's entries are all on 2026-03-01
    report.update(start="2026-03-02", end="2026-03-31")
    with pytest.raises(ProofError, match=r"line 1 \(2026-03-01T09:30:00Z\) is outside the report's period"):
        pinned_check(report, store)
    report.update(start="2026-03-01", end="2026-03-01")
    assert pinned_check(report, store).lines == 8
    report.update(start="March")
    with pytest.raises(ValueError, match="start and end must be dates"):
        pinned_check(report, store)
