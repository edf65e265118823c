"""The witness's add-checkpoint rules (c2sp.org/tlog-witness), checked on the protocol object without HTTP."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from audit.entries import SigningKey
from audit.merkle import EMPTY_ROOT
from audit.note import ALG_COSIGNATURE_V1, Checkpoint, NoteError, NoteSigner, Signature, open_note
from audit.witness import (
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    RequestError,
    StateFile,
    Witness,
    WitnessStateError,
    load_witness_key,
    write_witness_key,
)
from audit.witness_client import request_body
from tests.support.tlog import MemoryLog

NOW = 1_800_000_000


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def cosigner() -> NoteSigner:
    return NoteSigner("witness.example/w1", SigningKey.generate(), ALG_COSIGNATURE_V1)


@pytest.fixture
def state_path(tmp_path) -> str:
    return str(tmp_path / "witness-state.json")


def make_witness(cosigner: NoteSigner, log: MemoryLog, state_path: str) -> Witness:
    return Witness(cosigner, [log.verifier], StateFile(state_path), clock=lambda: NOW)


@pytest.fixture
def witness(cosigner, log, state_path) -> Witness:
    return make_witness(cosigner, log, state_path)


def submit(witness: Witness, log: MemoryLog, old: int, proof: list[bytes] | None = None, checkpoint: str | None = None):
    proof = log.proof(old) if proof is None and old else (proof or [])
    return witness.add_checkpoint(request_body(checkpoint or log.checkpoint(), old, proof))


def test_the_first_checkpoint_is_cosigned_with_a_timestamped_cosignature_over_the_checkpoint(witness, log, cosigner):
    log.append(5)
    reply = submit(witness, log, 0)
    assert reply.status == 200
    signature = Signature.parse_line(reply.body.removesuffix("\n"))
    cosigned = open_note(log.checkpoint() + reply.body, [log.verifier, cosigner.verifier])
    assert signature in cosigned.signatures
    assert int.from_bytes(signature.signature[:8], "big") == NOW


def test_a_grown_checkpoint_with_a_valid_consistency_proof_is_cosigned(witness, log):
    log.append(5)
    assert submit(witness, log, 0).status == 200
    log.append(17)
    assert submit(witness, log, 5).status == 200
    assert witness.latest(log.origin).size == 22


def test_an_old_size_other_than_the_last_cosigned_gets_409_with_the_latest_size(witness, log):
    log.append(5)
    submit(witness, log, 0)
    log.append(3)
    reply = submit(witness, log, 0)
    assert (reply.status, reply.body, reply.content_type) == (409, "5\n", SIZE_CONTENT_TYPE)


def test_a_rollback_to_a_smaller_checkpoint_is_refused(witness, log):
    log.append(9)
    submit(witness, log, 0)
    smaller = log.checkpoint(size=4)
    assert submit(witness, log, 9, [], smaller).status == 400
    assert submit(witness, log, 4, [], smaller).status == 409
    assert witness.latest(log.origin).size == 9


def test_a_fork_of_the_same_size_with_another_root_is_refused(witness, log):
    log.append(6)
    submit(witness, log, 0)
    fork = MemoryLog(log.origin, log.signer)
    fork.append(6, tag="forged")
    reply = submit(witness, log, 6, [], fork.checkpoint())
    assert reply.status == 422
    assert "different tree of the same size 6" in reply.body


def test_a_forked_larger_tree_fails_its_consistency_proof(witness, log):
    log.append(6)
    submit(witness, log, 0)
    fork = MemoryLog(log.origin, log.signer)
    fork.append(10, tag="forged")
    reply = submit(witness, log, 6, fork.proof(6), fork.checkpoint())
    assert reply.status == 422
    assert "consistency proof" in reply.body


def test_the_same_checkpoint_again_is_cosigned_again(witness, log):
    log.append(4)
    submit(witness, log, 0)
    assert submit(witness, log, 4, []).status == 200


@pytest.mark.parametrize("old", [0, 3])
def test_a_proof_that_does_not_belong_is_422(witness, log, old):
    log.append(3)
    if old:
        submit(witness, log, 0)
    log.append(5)
    bogus = [hashlib.sha256(b"x").digest()] * (3 if old else 1)
    assert submit(witness, log, old, bogus).status == 422


def test_an_empty_checkpoint_must_carry_the_empty_tree_root(witness, log):
    good = Checkpoint(log.origin, 0, EMPTY_ROOT).sign(log.signer)
    bad = Checkpoint(log.origin, 0, hashlib.sha256(b"not empty").digest()).sign(log.signer)
    assert submit(witness, log, 0, [], bad).status == 422
    assert submit(witness, log, 0, [], good).status == 200


def test_a_checkpoint_signed_by_another_key_of_the_same_name_is_403(witness, log):
    impostor = MemoryLog(log.origin)
    impostor.append(3)
    reply = submit(witness, log, 0, [], impostor.checkpoint())
    assert reply.status == 403
    assert "no signature by a trusted key" in reply.body


def test_a_checkpoint_whose_log_signature_does_not_verify_is_403(witness, log):
    log.append(3)
    signed = log.checkpoint().replace("\n3\n", "\n4\n")
    reply = submit(witness, log, 0, [], signed)
    assert reply.status == 403
    assert "invalid signature for key portal.example/audit" in reply.body


def test_a_checkpoint_of_an_unknown_origin_is_404(witness):
    stranger = MemoryLog("elsewhere.example/log")
    stranger.append(2)
    assert submit(witness, stranger, 0).status == 404


@pytest.mark.parametrize(("body", "message"), [
    (b"", "no blank line"),
    (b"\xff\xfe", "not UTF-8"),
    (b"old 01\n\nCHECKPOINT", "`old <size>`"),
    (b"new 1\n\nCHECKPOINT", "`old <size>`"),
    (b"old 0\nnot-base64\n\nCHECKPOINT", "proof line 1 is not base64"),
    (b"old 0\nYWJj\n\nCHECKPOINT", "proof line 1 is 3 bytes"),
    (b"old 0\n" + b"".join([base64.b64encode(bytes(32)) + b"\n"] * 64) + b"\nCHECKPOINT", "more than 63 lines"),
    (b"old 0\n\nportal.example/audit\nfive\n", "no blank line"),
    (b"old 9\n\nCHECKPOINT", "old size 9 is larger than the checkpoint size 3"),
])
def test_a_malformed_request_is_400_with_what_is_wrong(witness, log, body, message):
    log.append(3)
    body = body.replace(b"CHECKPOINT", log.checkpoint().encode())
    reply = witness.add_checkpoint(body)
    assert reply.status == 400
    assert message in reply.body


def test_a_truncated_checkpoint_in_the_request_is_400(witness, log):
    log.append(3)
    with pytest.raises(RequestError) as refused:
        AddCheckpoint.parse(request_body(log.checkpoint()[:-10], 0, []))
    assert refused.value.reply.status == 400


def test_of_two_concurrent_submissions_from_the_same_old_size_exactly_one_is_cosigned(witness, log):
    log.append(4)
    submit(witness, log, 0)
    fork = MemoryLog(log.origin, log.signer)
    fork.append(4)
    log.append(3)
    fork.append(5, tag="fork")
    bodies = [request_body(log.checkpoint(), 4, log.proof(4)), request_body(fork.checkpoint(), 4, fork.proof(4))]
    start = threading.Barrier(2)

    def send(body: bytes):
        start.wait()
        return witness.add_checkpoint(body)

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(reply.status for reply in pool.map(send, bodies))
    assert statuses == [200, 409]


def test_the_state_survives_a_new_witness_on_the_same_file(cosigner, log, state_path):
    log.append(5)
    assert submit(make_witness(cosigner, log, state_path), log, 0).status == 200
    again = make_witness(cosigner, log, state_path)
    assert again.latest(log.origin).size == 5
    log.append(1)
    assert submit(again, log, 0).status == 409


def test_the_state_file_keeps_the_cosigned_checkpoint_and_nothing_half_written(witness, log, state_path, cosigner):
    log.append(5)
    submit(witness, log, 0)
    document = json.loads(open(state_path, encoding="utf-8").read())
    note = document["logs"][log.origin]["note"]
    assert open_note(note, [log.verifier, cosigner.verifier]).text == Checkpoint.parse(note.split("\n\n")[0] + "\n").text()
    assert [name for name in os.listdir(os.path.dirname(state_path)) if name.startswith(".witness-state-")] == []


def test_a_state_file_that_disagrees_with_its_checkpoint_stops_the_witness(witness, log, state_path, cosigner):
    log.append(5)
    submit(witness, log, 0)
    document = json.loads(open(state_path, encoding="utf-8").read())
    document["logs"][log.origin]["size"] = 2
    with open(state_path, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    with pytest.raises(WitnessStateError, match="disagrees with its stored checkpoint"):
        make_witness(cosigner, log, state_path)


def test_a_state_file_that_is_not_json_stops_the_witness(cosigner, log, state_path):
    with open(state_path, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    with pytest.raises(WitnessStateError, match="cannot read the witness state"):
        make_witness(cosigner, log, state_path)


def test_a_state_that_cannot_be_written_is_503_and_nothing_is_cosigned(cosigner, log, tmp_path):
    directory = tmp_path / "gone"
    directory.mkdir()
    witness = make_witness(cosigner, log, str(directory / "state.json"))
    directory.rmdir()
    log.append(5)
    reply = submit(witness, log, 0)
    assert reply.status == 503
    assert witness.latest(log.origin) is None


def test_a_second_witness_cannot_share_a_locked_state_file(state_path):
    first, second = StateFile(state_path), StateFile(state_path)
    first.lock()
    try:
        with pytest.raises(WitnessStateError, match="another witness"):
            second.lock()
    finally:
        first.unlock()


def test_the_witness_key_file_round_trips_and_a_plain_log_key_is_refused(tmp_path):
    written = write_witness_key("witness.example/w1", str(tmp_path / "w.key"))
    assert load_witness_key(str(tmp_path / "w.key")).vkey() == written.vkey()
    assert os.stat(tmp_path / "w.key").st_mode & 0o077 == 0
    (tmp_path / "log.key").write_text(NoteSigner("log", SigningKey.generate()).signer_key())
    with pytest.raises(NoteError, match="not a cosignature/v1"):
        load_witness_key(str(tmp_path / "log.key"))


def test_a_witness_needs_a_cosigner_key(log, state_path):
    with pytest.raises(ValueError, match="cosignature/v1"):
        Witness(log.signer, [log.verifier], StateFile(state_path))
