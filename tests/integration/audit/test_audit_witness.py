"""The witness as a separate process, driven over real HTTP by the client the portal uses.

One witness per test module keeps the number of subprocess starts small; the tests run in order
against one growing log, as a portal would submit its checkpoints.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
import requests

from audit.entries import SigningKey
from audit.note import Checkpoint, NoteSigner, open_note
from audit.witness import SIZE_CONTENT_TYPE, origin_hash
from audit.witness_client import (
    WitnessAnswerError,
    WitnessConflict,
    WitnessRefused,
    WitnessUnreachable,
    add_checkpoint,
    request_body,
)
from tests.support.environment import IN_CI, ROOT, free_port
from tests.support.tlog import MemoryLog
from tests.support.witness_process import WitnessProcess, audit_cli


@pytest.fixture(scope="module")
def log() -> MemoryLog:
    return MemoryLog("portal.test/audit")


@pytest.fixture(scope="module")
def witness(tmp_path_factory, log):
    with WitnessProcess(tmp_path_factory.mktemp("witness"), [log.signer.vkey()]) as process:
        yield process


def post(witness: WitnessProcess, body: bytes) -> requests.Response:
    return requests.post(f"{witness.url}/add-checkpoint", data=body, timeout=10)


def test_the_first_checkpoint_is_cosigned_and_the_cosignature_verifies(witness, log):
    log.append(10)
    cosigned = add_checkpoint(witness.url, log.checkpoint(), 0, [], witness.verifier)
    assert cosigned.checkpoint.size == 10
    note = open_note(cosigned.note, [log.verifier, witness.verifier])
    assert [s.name for s in note.signatures] == ["portal.test/audit", "witness.test/w1"]


def test_a_grown_consistent_checkpoint_is_cosigned(witness, log):
    log.append(23)
    cosigned = add_checkpoint(witness.url, log.checkpoint(), 10, log.proof(10), witness.verifier)
    assert cosigned.checkpoint.size == 33


def test_a_rollback_is_refused_and_the_client_learns_the_latest_size(witness, log):
    with pytest.raises(WitnessRefused) as refused:
        add_checkpoint(witness.url, log.checkpoint(size=20), 33, [], witness.verifier)
    assert refused.value.status == 400
    with pytest.raises(WitnessConflict) as conflict:
        add_checkpoint(witness.url, log.checkpoint(size=20), 10, log.proof(10, 20), witness.verifier)
    assert conflict.value.latest_size == 33


def test_the_conflict_answer_is_the_size_in_its_own_content_type(witness, log):
    answer = post(witness, request_body(log.checkpoint(), 0, []))
    assert answer.status_code == 409
    assert answer.headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert answer.text == "33\n"


def test_a_fork_of_the_same_size_with_another_root_is_refused(witness, log):
    fork = MemoryLog(log.origin, log.signer)
    fork.append(33, tag="rewritten")
    with pytest.raises(WitnessRefused) as refused:
        add_checkpoint(witness.url, fork.checkpoint(), 33, [], witness.verifier)
    assert refused.value.status == 422
    assert "different tree of the same size 33" in refused.value.reason


def test_a_longer_fork_fails_its_consistency_proof(witness, log):
    fork = MemoryLog(log.origin, log.signer)
    fork.append(40, tag="rewritten")
    with pytest.raises(WitnessRefused) as refused:
        add_checkpoint(witness.url, fork.checkpoint(), 33, fork.proof(33), witness.verifier)
    assert refused.value.status == 422


@pytest.mark.parametrize("body", [b"garbage", b"old 0\n\nnot a checkpoint\n", b"old x\n\n", "old 0\n\n\u2014".encode()])
def test_a_malformed_body_is_400(witness, body):
    answer = post(witness, body)
    assert answer.status_code == 400
    assert answer.text.strip()


def test_oversized_bodies_unknown_paths_and_missing_lengths_are_refused(witness):
    assert post(witness, b"x" * (64 * 1024 + 1)).status_code == 413
    assert requests.post(f"{witness.url}/elsewhere", data=b"old 0\n\n", timeout=10).status_code == 404
    chunked = requests.post(f"{witness.url}/add-checkpoint", data=iter([b"old 0\n\n"]), timeout=10)
    assert chunked.status_code == 411


def test_a_forged_log_signature_is_403(witness, log):
    impostor = NoteSigner(log.origin, SigningKey.generate())
    forged = Checkpoint(log.origin, 50, hashlib.sha256(b"forged").digest()).sign(impostor)
    with pytest.raises(WitnessRefused) as refused:
        add_checkpoint(witness.url, forged, 33, [], witness.verifier)
    assert refused.value.status == 403
    tampered = log.checkpoint().replace("\n33\n", "\n34\n")
    assert post(witness, request_body(tampered, 33, [])).status_code == 403


def test_an_unknown_log_is_404(witness):
    stranger = MemoryLog("stranger.test/log")
    stranger.append(1)
    with pytest.raises(WitnessRefused) as refused:
        add_checkpoint(witness.url, stranger.checkpoint(), 0, [], witness.verifier)
    assert refused.value.status == 404


def test_an_answer_from_another_witness_key_is_not_accepted(witness, log, tmp_path):
    other = WitnessProcess(tmp_path, [log.signer.vkey()], name="witness.test/w1")
    with pytest.raises(WitnessAnswerError, match="not a valid cosignature by witness.test/w1"):
        add_checkpoint(witness.url, log.checkpoint(), 33, [], other.verifier)


def test_the_monitoring_path_serves_the_latest_cosigned_checkpoint(witness, log):
    answer = requests.get(f"{witness.url}/{origin_hash(log.origin)}/checkpoint", timeout=10)
    assert answer.status_code == 200
    note = open_note(answer.text, [log.verifier, witness.verifier])
    assert Checkpoint.parse(note.text).size == 33
    assert requests.get(f"{witness.url}/{origin_hash('nobody')}/checkpoint", timeout=10).status_code == 404


def test_the_state_survives_a_restart_of_the_witness_process(witness, log):
    assert witness.stop() == 0
    witness.start()
    with pytest.raises(WitnessConflict) as conflict:
        add_checkpoint(witness.url, log.checkpoint(), 0, [], witness.verifier)
    assert conflict.value.latest_size == 33
    log.append(7)
    assert add_checkpoint(witness.url, log.checkpoint(), 33, log.proof(33), witness.verifier).checkpoint.size == 40


def test_a_second_witness_on_the_same_state_file_refuses_to_start(witness):
    clone = audit_cli("witness", "--key", str(witness.key_path), "--state", str(witness.state_path),
                      "--port", str(free_port()), "--log-key", witness.log_keys[0])
    assert clone.returncode == 2
    assert "another witness is using the state file" in clone.stderr


def test_an_unreachable_witness_raises_its_own_error(log):
    with pytest.raises(WitnessUnreachable):
        add_checkpoint(f"http://127.0.0.1:{free_port()}", log.checkpoint(), 0, [], log.verifier, timeout=5)


@pytest.mark.parametrize(("args", "message"), [
    (["--log-key", "not a vkey"], "verifier key"),
    (["--log-key", "portal.test/audit+00000000+AAAA"], "unsupported signature type 0x00"),
])
def test_the_witness_refuses_unusable_configuration_with_exit_2(witness, tmp_path, args, message):
    result = audit_cli("witness", "--key", str(witness.key_path), "--state", str(tmp_path / "s.json"),
                       "--port", str(free_port()), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_witness_keygen_prints_a_cosigner_verifier_key_and_refuses_to_overwrite(tmp_path):
    first = audit_cli("witness-keygen", "--name", "w.test/a", "--out", str(tmp_path / "k"))
    assert first.returncode == 0
    assert first.stdout.startswith("w.test/a+")
    again = audit_cli("witness-keygen", "--name", "w.test/a", "--out", str(tmp_path / "k"))
    assert again.returncode == 2


def test_node_crypto_verifies_the_witness_cosignature_from_the_spec_alone(witness, log, tmp_path):
    if shutil.which("node") is None:
        if IN_CI:
            pytest.fail("CI must check the cosignature with node")
        pytest.skip("needs node")
    log.append(2)
    cosigned = add_checkpoint(witness.url, log.checkpoint(), log.size - 2, log.proof(log.size - 2), witness.verifier)
    (tmp_path / "note").write_text(cosigned.note, encoding="utf-8")
    check = [shutil.which("node"), str(ROOT / "tests" / "support" / "cosignature_check.mjs")]
    good = subprocess.run([*check, witness.verifier.vkey(), str(tmp_path / "note")], capture_output=True, text=True,
                          timeout=60)
    assert (good.returncode, good.stdout.strip()) == (0, str(cosigned.timestamp))
    (tmp_path / "note").write_text(cosigned.note.replace(f"\n{log.size}\n", f"\n{log.size + 1}\n"), encoding="utf-8")
    forged = subprocess.run([*check, witness.verifier.vkey(), str(tmp_path / "note")], capture_output=True,
                            text=True, timeout=60)
    assert forged.returncode == 1
