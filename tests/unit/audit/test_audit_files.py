"""Tampering with JSONL store files and JSONL exports is detected, classified and located."""
from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest

from audit import (
    AuditEvent,
    AuditFilter,
    AuditWriteError,
    Entry,
    JsonlAuditStore,
    SigningKey,
    export_jsonl,
    verify,
    verify_file,
)
from audit.merkle import tree_hash
from audit.note import NoteSigner
from audit.store import DEFAULT_ORIGIN
from audit.tree_checkpoints import note_body, sign_note

KEY = SigningKey.generate()


def _event(i: int) -> AuditEvent:
    return AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 4}", patient_id=f"p{i % 7}",
                      details={"results": i})


@pytest.fixture
def store(tmp_path) -> JsonlAuditStore:
    store = JsonlAuditStore(tmp_path / "audit.jsonl", KEY, checkpoint_every=100, fsync=False)
    store.append_many(_event(i) for i in range(250))
    return store


@pytest.fixture
def export(store, tmp_path):
    path = tmp_path / "export.jsonl"
    newest = store.sign_tree_checkpoint()  # the manifest names a checkpoint of the whole exported tree
    path.write_text("".join(export_jsonl(store.iter_entries(), KEY, checkpoints=store.tree_checkpoints(),
                                         checkpoint=newest)))
    return path


def _lines(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _line_of(lines: list[str], seq: int) -> int:
    """1-based line number of the entry with this seq."""
    return next(n for n, line in enumerate(lines, 1) if f'"seq":{seq},' in line and '"type":"entry"' in line)


def _record(lines: list[str], seq: int) -> dict:
    return json.loads(lines[_line_of(lines, seq) - 1])


def _dump(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def _forged_line(seq: int, leaf_hash_ok: bool) -> str:
    record = Entry(seq, AuditEvent(action="chart.read", outcome="allowed", actor_id="mallory")).to_record()
    return _dump(record if leaf_hash_ok else {**record, "leaf_hash": base64.b64encode(secrets.token_bytes(32)).decode()})


def _checkpoint_size(line: str) -> int | None:
    """The tree size a checkpoint line signs (None for other lines)."""
    record = json.loads(line)
    return note_body(record["note"]).size if record["type"] == "checkpoint" else None


def _checkpoint_line(lines: list[str], size: int) -> int:
    return next(n for n, line in enumerate(lines, 1) if _checkpoint_size(line) == size)


def _assert_problem(path, kind: str, position: int) -> None:
    report = verify_file(path, KEY.verify_key)
    assert not report.ok
    assert (report.problem.kind, report.problem.position) == (kind, position), report.problem


def test_store_file_and_export_verify_clean(store, export):
    store_report = verify_file(store.path, KEY.verify_key)
    assert store_report.ok and store_report.entries_checked == 250 and store_report.checkpoints_checked == 3
    export_report = verify_file(export, KEY.verify_key)
    assert export_report.ok and export_report.mode == "export" and export_report.checkpoints_checked == 4
    assert verify_file(export).self_asserted_key


@pytest.fixture(params=["store", "export"])
def log_file(request, store, export):
    """Each tamper test runs on the live store file and on its JSONL export."""
    return Path(store.path) if request.param == "store" else export


def test_edited_field(log_file):
    lines = _lines(log_file)
    record = _record(lines, 57)
    record["event"]["patient_id"] = "p-someone-else"
    lines[_line_of(lines, 57) - 1] = _dump(record)
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "edited", _line_of(lines, 57))


def test_edited_field_with_recomputed_leaf_hash_is_caught_by_the_next_signed_checkpoint(log_file):
    """A leaf does not link to its neighbour as a chain link did: the tree's root at the next signed checkpoint
    is what no longer matches."""
    lines = _lines(log_file)
    record = _record(lines, 57)
    event = AuditEvent.from_dict({**record["event"], "outcome": "denied"})
    lines[_line_of(lines, 57) - 1] = _dump(Entry(57, event).to_record())
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "checkpoint_mismatch", _checkpoint_line(lines, 100))


def test_deleted_entry(log_file):
    lines = _lines(log_file)
    position = _line_of(lines, 57)
    del lines[position - 1]
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "deleted", position)


@pytest.mark.parametrize("leaf_hash_ok", [True, False], ids=["valid-leaf-hash", "wrong-leaf-hash"])
def test_inserted_forged_entry(log_file, leaf_hash_ok):
    lines = _lines(log_file)
    position = _line_of(lines, 58)
    lines.insert(position - 1, _forged_line(58, leaf_hash_ok))
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "inserted", position)


def test_swapped_entries(log_file):
    lines = _lines(log_file)
    first, second = _line_of(lines, 57), _line_of(lines, 58)
    lines[first - 1], lines[second - 1] = lines[second - 1], lines[first - 1]
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "reordered", first)


def _mallorys_note(size: int, root: bytes) -> str:
    """A checkpoint under the log's own origin, signed by a key that is not the log's."""
    return sign_note(NoteSigner(DEFAULT_ORIGIN, SigningKey.generate()), size, root)


def test_forged_checkpoint(log_file):
    lines = _lines(log_file)
    position = _checkpoint_line(lines, 200)
    record = json.loads(lines[position - 1])
    lines[position - 1] = _dump({**record, "note": _mallorys_note(200, note_body(record["note"]).root_hash)})
    log_file.write_text("".join(lines))
    _assert_problem(log_file, "bad_checkpoint_signature", position)


def test_checkpoint_signed_by_another_key_fails_only_with_the_trusted_key(store):
    root = tree_hash([entry.leaf_hash() for entry in store.iter_entries()])
    with open(store.path, "a") as handle:
        handle.write(_dump({"type": "checkpoint", "created": "2024-01-01T00:00:00.000000Z",
                            "note": _mallorys_note(250, root)}))
    report = verify_file(store.path, KEY.verify_key)
    assert report.problem.kind == "bad_checkpoint_signature"


def test_truncated_export_after_checkpoint(export):
    lines = _lines(export)
    keep = _line_of(lines, 220)
    export.write_text("".join(lines[:keep] + lines[-1:]))
    _assert_problem(export, "truncated", keep + 1)


def test_truncated_export_without_manifest(export):
    lines = _lines(export)
    keep = _line_of(lines, 150)
    export.write_text("".join(lines[:keep]))
    _assert_problem(export, "truncated", keep + 1)


def test_truncated_store_with_surviving_checkpoint(store):
    path = Path(store.path)
    lines = _lines(path)
    checkpoint_200 = lines[_checkpoint_line(lines, 200) - 1]
    kept = lines[:_line_of(lines, 150)]
    path.write_text("".join(kept + [checkpoint_200]))
    _assert_problem(path, "truncated", len(kept) + 1)


def test_forged_manifest(export):
    lines = _lines(export)
    manifest = json.loads(lines[-1])
    manifest["count"] = 249
    lines[-1] = _dump(manifest)
    export.write_text("".join(lines))
    _assert_problem(export, "bad_checkpoint_signature", len(lines))


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_malformed_line_is_reported_by_line_number(log_file, damage):
    lines = _lines(log_file)
    position = _line_of(lines, 100)
    lines[position - 1] = lines[position - 1][:40] + ("\n" if damage == "garbage" else "")
    log_file.write_text("".join(lines[:position] if damage == "cut" else lines))
    _assert_problem(log_file, "malformed", position)


def test_filtered_export_checks_hashes_and_manifest(store, tmp_path):
    only = AuditFilter(actor_id="u1")
    path = tmp_path / "u1.jsonl"
    path.write_text("".join(export_jsonl(store.iter_entries(filter=only), KEY, filter=only)))
    report = verify_file(path, KEY.verify_key)
    assert report.ok and report.entries_checked == sum(1 for i in range(250) if i % 4 == 1)
    lines = _lines(path)
    del lines[5]
    path.write_text("".join(lines))
    assert verify_file(path, KEY.verify_key).problem.kind == "truncated"


def test_store_refuses_to_append_after_a_torn_write(store):
    with open(store.path, "a") as handle:
        handle.write('{"type":"entry","seq":')
    with pytest.raises(AuditWriteError):
        store.append(_event(0))


def test_store_filters_and_checkpoints(store):
    assert store.count() == 250
    assert [e.seq for e in store.iter_entries(after_seq=245)] == [246, 247, 248, 249, 250]
    assert all(e.event.actor_id == "u2" for e in store.iter_entries(filter=AuditFilter(actor_id="u2")))
    checkpoint = store.sign_tree_checkpoint()
    assert (checkpoint.tree_size, checkpoint.root_hash) == (250, store.root())
    assert [c.tree_size for c in store.tree_checkpoints()] == [100, 200, 250]
    report = verify_file(store.path, KEY.verify_key)  # an extra, on-demand checkpoint is welcome
    assert report.ok and report.checkpoints_checked == 3


# --------------------------------------------------------------------------- deleted checkpoints


def _without_checkpoints(path, counts: set[int] | None = None) -> list[str]:
    """The file's lines minus its checkpoint lines (those of `counts` only, when given)."""
    kept = [line for line in _lines(path)
            if _checkpoint_size(line) is None or (counts is not None and _checkpoint_size(line) not in counts)]
    path.write_text("".join(kept))
    return kept


def test_deleting_every_checkpoint_is_reported_at_the_first_missing_one(log_file):
    lines = _without_checkpoints(log_file)
    report = verify_file(log_file, KEY.verify_key)
    assert (report.problem.kind, report.problem.position) == ("checkpoint_missing", _line_of(lines, 100))
    assert report.problem.message == "checkpoint missing at seq 100"
    assert report.summary().startswith(f"FAILED: checkpoint_missing at position {_line_of(lines, 100)}: "
                                       "checkpoint missing at seq 100")


def test_deleting_one_checkpoint_is_reported(log_file):
    lines = _without_checkpoints(log_file, counts={200})
    _assert_problem(log_file, "checkpoint_missing", _line_of(lines, 200))


def test_deleted_checkpoints_then_a_rewritten_log_is_still_caught(store):
    """The attack the rule exists for: with the checkpoints gone, entries are removed and the rest renumbered
    and re-hashed."""
    path = Path(store.path)
    survivors = [Entry.from_record(json.loads(line)) for line in _lines(path) if '"type":"entry"' in line]
    survivors = [entry for entry in survivors if entry.event.patient_id != "p3"]
    rewritten = [Entry(seq, entry.event) for seq, entry in enumerate(survivors, 1)]
    path.write_text("".join(_dump(entry.to_record()) for entry in rewritten))
    _assert_problem(path, "checkpoint_missing", 100)  # line 100 holds seq 100: there are no other lines


def test_the_interval_is_the_writers(store):
    report = verify_file(store.path, KEY.verify_key, checkpoint_every=50)
    assert report.problem.kind == "checkpoint_missing" and report.problem.message == "checkpoint missing at seq 50"
    assert verify_file(store.path, KEY.verify_key, checkpoint_every=100).ok


def test_entries_after_the_head_read_are_not_yet_due(store):
    """A live log: entries appended after the checkpoints were read may still be getting theirs."""
    entries = list(store.iter_entries())
    first_checkpoint = store.tree_checkpoints()[:1]  # read when the head was 199
    assert verify(entries, first_checkpoint, KEY.verify_key, required_through=199).ok
    report = verify(entries, first_checkpoint, KEY.verify_key, required_through=250)
    assert report.problem.message == "checkpoint missing at seq 200"
