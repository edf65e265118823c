"""Reports that prove themselves (audit/report.py): every line's entry with its inclusion proof against one
signed, cosigned checkpoint, checked offline with the public keys alone, and anything changed refused."""
from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from audit import (
    AuditEvent,
    ProofError,
    SigningKey,
    SqlAuditStore,
    audit_tree_node,
    install_append_only_guard,
    remove_append_only_guard,
)
from audit.note import ALG_COSIGNATURE_V1, NoteSigner
from audit.report import FORMAT, check_extends, check_report, prove_entries, sign_report
from audit.tree import build_tree
from tests.support.signed_reports import (
    CSV,
    ORIGIN,
    PATIENT,
    WITNESS,
    issued_report,
    make_store,
    pinned_check,
    verify_report_cli,
)


@pytest.fixture
def store(tmp_path) -> SqlAuditStore:
    return make_store(tmp_path)


def test_a_report_checks_offline_with_the_pinned_keys_and_its_csv(store):
    report = issued_report(store)
    checked = pinned_check(report, store)
    assert (checked.lines, checked.tree_size, checked.keys_pinned, checked.csv_checked) == (8, 50, True, True)
    assert checked.summary().startswith("OK: all 8 lines are entries of the audit log clinic.example/audit")
    assert "cosigned by 1 witness(es): witness.example/w1" in checked.summary()
    assert report["proof"]["format"] == FORMAT and len(report["proof"]["entries"]) == 8


def test_each_proof_is_a_logarithmic_path(store):
    paths = [len(item["inclusion_path"]) for item in issued_report(store)["proof"]["entries"]]
    assert max(paths) <= 6, "a tree of 50 leaves is at most 6 levels deep"


def test_proving_refuses_an_entry_changed_after_it_was_written(store):
    checkpoint = store.sign_tree_checkpoint()
    entries = store.accesses_to(PATIENT)
    changed = type(entries[0])(entries[0].seq, AuditEvent.from_dict({**entries[0].event.to_dict(), "reason": "x"}))
    with pytest.raises(ProofError):
        prove_entries(store, [changed, *entries[1:]], checkpoint.note, store.tree_signer().verifier)


def test_proving_refuses_a_checkpoint_the_witness_did_not_cosign(store):
    checkpoint = store.sign_tree_checkpoint()
    with pytest.raises(ProofError, match="not signed by witness.example/w1"):
        prove_entries(store, store.accesses_to(PATIENT), checkpoint.note, store.tree_signer().verifier,
                      [WITNESS.verifier])


def test_proving_refuses_an_entry_newer_than_the_checkpoint(store):
    checkpoint = store.sign_tree_checkpoint()
    newer = store.append(AuditEvent(action="chart.read", outcome="allowed", patient_id=PATIENT))
    with pytest.raises(ProofError, match=f"seq {newer.seq} is not covered"):
        prove_entries(store, [newer], checkpoint.note, store.tree_signer().verifier)


def _edit_event(report: dict, **fields) -> None:
    report["proof"]["entries"][0]["entry"]["event"].update(fields)


TAMPERING = {
    "an entry's reason rewritten": lambda r: _edit_event(r, reason="quality audit"),
    "an entry moved to another patient": lambda r: _edit_event(r, patient_id="someone-else"),
    "a line's time moved": lambda r: r["lines"][0].update(time="2020-01-01T00:00:00Z"),
    "a line removed": lambda r: r["lines"].pop(),
    "a line added twice": lambda r: r["lines"].append(dict(r["lines"][0])),
    "a proof hash swapped": lambda r: r["proof"]["entries"][1]["inclusion_path"].reverse(),
    "a line and another line's entry dropped": lambda r: (r["lines"].pop(), r["proof"]["entries"].pop(0)),
    "the root claimed for another tree": lambda r: r["proof"].update(root_hash="A" * 43 + "="),
    "the checkpoint's size changed": lambda r: r["proof"].update(
        checkpoint=r["proof"]["checkpoint"].replace("\n50\n", "\n51\n", 1)),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_anything_changed_in_a_report_is_refused_as_tampering(store, change):
    report = issued_report(store)
    change(report)
    with pytest.raises(ProofError):
        pinned_check(report, store)


def test_a_report_signed_by_another_log_or_witness_fails_against_the_pinned_keys(store):
    report = issued_report(store)
    impostor = NoteSigner(ORIGIN, SigningKey.generate())
    with pytest.raises(ProofError, match="another log key"):
        pinned_check(report, store, log_key=impostor.vkey())
    other_witness = NoteSigner("witness.example/w1", SigningKey.generate(), ALG_COSIGNATURE_V1)
    with pytest.raises(ProofError, match="signatures do not verify"):
        pinned_check(report, store, witness_keys=[other_witness.vkey()])


def test_another_csv_does_not_match_the_digest(store):
    with pytest.raises(ProofError, match="CSV does not match"):
        pinned_check(issued_report(store), store, csv=CSV + b"2026-03-01T09:30:00Z,Nobody\r\n")


UNREADABLE = {
    "not an object": lambda r: [r],
    "no proof": lambda r: {k: v for k, v in r.items() if k != "proof"},
    "another format": lambda r: {**r, "proof": {**r["proof"], "format": "x/1"}},
    "a path that is not a list": lambda r: (r["proof"]["entries"][0].update(inclusion_path="AA=="), r)[1],
    "a hash that is not base64": lambda r: (r["proof"]["entries"][0]["inclusion_path"].__setitem__(0, "%%"), r)[1],
    "a log key that is not a key": lambda r: {**r, "proof": {**r["proof"], "log_key": "nope"}},
}


@pytest.mark.parametrize("make", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_report_that_cannot_be_read_is_an_error_naming_what_not_tampering(store, make):
    with pytest.raises(ValueError) as raised:
        check_report(make(copy.deepcopy(issued_report(store))))
    assert not isinstance(raised.value, ProofError), raised.value


def test_the_cli_exits_0_for_a_report_1_for_a_changed_one_and_2_for_an_unreadable_file(store, tmp_path):
    report, path = issued_report(store), tmp_path / "report.json"
    csv = tmp_path / "report.csv"
    csv.write_bytes(CSV)
    path.write_text(json.dumps(report))
    pins = ["--log-key", store.tree_signer().vkey(), "--witness-key", WITNESS.vkey()]
    good = verify_report_cli(str(path), *pins, "--csv", str(csv))
    assert good.returncode == 0 and good.stdout.startswith("OK: all 8 lines"), good.stdout + good.stderr
    assert "warning" not in good.stderr
    unpinned = verify_report_cli(str(path))
    assert unpinned.returncode == 0 and "keys were taken from the report itself" in unpinned.stderr

    _edit_event(report, actor_id="dr-nobody")
    path.write_text(json.dumps(report))
    changed = verify_report_cli(str(path), *pins)
    assert changed.returncode == 1 and "tampered: the report was changed after the log signed it" in changed.stderr
    path.write_text(json.dumps(sign_report(report, store.tree_signer())))  # even the log's key cannot vouch for it
    resigned = verify_report_cli(str(path), *pins)
    assert resigned.returncode == 1 and "tampered: entry seq 1 is not in the signed tree" in resigned.stderr

    path.write_text("{not json")
    unreadable = verify_report_cli(str(path), *pins)
    assert unreadable.returncode == 2 and unreadable.stderr.startswith("error: not JSON")


def test_the_reports_tree_must_extend_the_checkpoint_signed_at_the_last_multiple(store):
    older = store.sign_tree_checkpoint()  # of 50 entries, as the log signs one at every multiple of its interval
    store.append_many(AuditEvent(action="chart.read", outcome="allowed", patient_id=PATIENT) for _ in range(5))
    newer = store.sign_tree_checkpoint()
    log = store.tree_signer().verifier
    check_extends(store, older.note, 50, newer.note, log)
    check_extends(store, None, 0, newer.note, log)  # a log shorter than the interval has no anchor yet
    with pytest.raises(ProofError, match="checkpoint missing at tree size 50"):
        check_extends(store, None, 50, newer.note, log)
    with pytest.raises(ProofError, match="cannot anchor"):
        check_extends(store, newer.note, 50, older.note, log)


def test_a_tree_rebuilt_over_rewritten_entries_does_not_extend_the_old_checkpoint(store):
    older = store.sign_tree_checkpoint()
    with store.engine.begin() as conn:  # an attacker with the database: rewrite an entry, rebuild the tree
        remove_append_only_guard(conn)
        conn.execute(sa.text("UPDATE audit_entry SET reason = 'quality audit' WHERE seq = 8"))
        conn.execute(audit_tree_node.delete())
        build_tree(conn)
        install_append_only_guard(conn)
    forged = store.sign_tree_checkpoint()  # the portal signs whatever tree it holds now
    with pytest.raises(ProofError, match="not an extension of its signed checkpoint of 50 entries"):
        check_extends(store, older.note, 50, forged.note, store.tree_signer().verifier)
