"""Signed notes, checkpoints and cosignatures, checked against vectors published by other implementations.

Known-answer vectors: golang.org/x/mod/sumdb/note's tests (note_test.go, BSD-style licence,
Copyright 2019 The Go Authors), the C2SP signed-note and tlog-cosignature specifications, and
transparency-dev/formats's tests (Apache-2.0): sum.golang.org's published key and one of its
real checkpoints, and vkeys of a running witness.
"""
from __future__ import annotations

import base64
import hashlib

import pytest

from audit.entries import SigningKey
from audit.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    Signature,
    Verifier,
    cosignature_message,
    cosignature_timestamp,
    key_id,
    open_checkpoint,
    open_note,
    sign_note,
)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)
ROOT = hashlib.sha256(b"a root").digest()


def peter() -> Verifier:
    return Verifier.from_vkey(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_vkey(ENOCH_VKEY)


def log_signer(name: str = "portal.example/audit") -> NoteSigner:
    return NoteSigner(name, SigningKey.generate())


def witness_signer(name: str = "witness.example/w1") -> NoteSigner:
    return NoteSigner(name, SigningKey.generate(), ALG_COSIGNATURE_V1)


# Interoperability: vectors from golang.org/x/mod/sumdb/note and the specifications.

def test_signing_the_go_example_text_gives_byte_for_byte_the_go_signed_note():
    signer = NoteSigner.from_signer_key(PETER_SKEY)
    assert sign_note(GO_TEXT, signer) == GO_TEXT + "\n" + PETER_SIG
    assert signer.vkey() == PETER_VKEY
    assert signer.signer_key() == PETER_SKEY


def test_the_go_example_note_opens_with_peters_key_and_ignores_enochs_unknown_signature():
    note = open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter()])
    assert note.text == GO_TEXT
    assert [s.key() for s in note.signatures] == ["PeterNeumann+c74f20a3"]


def test_asking_for_both_go_keys_verifies_both_signatures():
    note = open_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter(), enoch()])
    assert [s.key() for s in note.signatures] == ["PeterNeumann+c74f20a3", "EnochRoot+af0cfe78"]


def test_a_real_sum_golang_org_checkpoint_verifies_with_its_published_key():
    checkpoint, note = open_checkpoint(SUMDB_CHECKPOINT, [Verifier.from_vkey(SUMDB_VKEY)], "go.sum database tree")
    assert checkpoint.size == 6476701
    assert base64.b64encode(checkpoint.root_hash).decode() == "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
    assert note.signatures[0].key_id == 0x033DE0AE


def test_the_signed_note_spec_example_verifies():
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    signed = (
        "This is an example message.\n\n— example.com/foo "
        "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert open_note(signed, [Verifier.from_vkey(vkey)]).text == "This is an example message.\n"


@pytest.mark.parametrize(("vkey", "algorithm"), [
    ("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6", ALG_ED25519),
    ("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", ALG_COSIGNATURE_V1),
])
def test_published_ed25519_and_cosigner_vkeys_have_the_key_ids_we_compute(vkey, algorithm):
    verifier = Verifier.from_vkey(vkey)
    assert verifier.algorithm == algorithm
    assert verifier.vkey() == vkey


@pytest.mark.parametrize(("encoded", "timestamp"), [
    # c2sp.org/tlog-cosignature's example cosignature, made at its example "time 1679315147".
    ("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==", 1679315147),
    # transparency-dev/formats note_cosigv1_test.go TestCoSigV1Timestamp.
    ("ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==", 1727964367),
])
def test_a_published_cosignature_carries_its_timestamp_in_the_first_eight_bytes(encoded, timestamp):
    assert cosignature_timestamp(Signature.parse_line(f"— witness.example/w1 {encoded}")) == timestamp


def test_the_cosigned_message_is_header_time_line_and_the_whole_checkpoint_text():
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosignature_message(text, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_key_id_is_the_first_four_bytes_of_sha256_over_name_newline_type_and_key():
    raw = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")[1:]
    assert key_id("PeterNeumann", ALG_ED25519, raw) == 0xC74F20A3
    assert key_id("PeterNeumann", ALG_COSIGNATURE_V1, raw) != 0xC74F20A3


# Strict parsing: the go test's manglings and the spec's rules.

def test_every_truncation_or_one_byte_change_of_a_verifier_key_is_refused():
    manglings = {PETER_VKEY[i:j] for i in range(len(PETER_VKEY)) for j in range(i + 1, len(PETER_VKEY) + 1)}
    manglings |= {PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:] for i in range(len(PETER_VKEY))}
    manglings.discard(PETER_VKEY)
    for mangled in manglings:
        with pytest.raises(NoteError):
            Verifier.from_vkey(mangled)


@pytest.mark.parametrize(("vkey", "message"), [
    ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "not canonical base64"),
    ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEQ==", "32 bytes, got 36"),
    ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "unsupported signature type 0x65"),
    ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 lowercase hex"),
    ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
    ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "name"),
])
def test_a_bad_verifier_key_is_refused_with_what_is_wrong(vkey, message):
    with pytest.raises(NoteError, match=message):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize(("data", "message"), [
    (GO_TEXT, "no blank line"),
    (GO_TEXT + "\n", "no signature lines"),
    (GO_TEXT + "\n" + PETER_SIG[:-1], "truncated"),
    (GO_TEXT + "\n" + PETER_SIG[:40] + "\n", "not base64"),
    ("\x01" + GO_TEXT + "\n" + PETER_SIG, "control character 0x01"),
    (b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), "not UTF-8"),
    (GO_TEXT + "\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
     "not base64"),
    (GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "line 2 does not start with an em dash"),
    (GO_TEXT + "\n" + PETER_SIG + "\n", "no signature lines"),
    (GO_TEXT + "\n" + "— PeterNeumann AAAA\n", "too short"),
    (GO_TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "not canonical base64"),
    (PETER_SIG + "\n" + GO_TEXT, "does not start with an em dash"),
    (GO_TEXT + "\n" + PETER_SIG * 101, "more than 100 signatures"),
])
def test_a_malformed_or_truncated_note_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(NoteError, match=message):
        open_note(data, [peter()])


def test_a_signature_by_a_trusted_key_that_does_not_verify_rejects_the_whole_note():
    forged = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        open_note(GO_TEXT + "\n" + forged + ENOCH_SIG, [peter()])


def test_a_changed_text_no_longer_verifies():
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(GO_TEXT.replace("answer", "Answer") + "\n" + PETER_SIG, [peter()])


def test_a_note_signed_only_by_unknown_keys_is_refused():
    with pytest.raises(NoteError, match="no signature by a trusted key \\(expected PeterNeumann\\+c74f20a3\\)"):
        open_note(GO_TEXT + "\n" + ENOCH_SIG, [peter()])


def test_a_key_with_the_same_name_but_another_key_is_ignored_not_trusted():
    impostor = NoteSigner("PeterNeumann", SigningKey.generate())
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(sign_note(GO_TEXT, impostor), [peter()])


def test_requiring_every_listed_key_refuses_a_note_missing_one():
    with pytest.raises(NoteError, match="not signed by EnochRoot\\+af0cfe78"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [peter(), enoch()])
    assert open_note(GO_TEXT + "\n" + PETER_SIG, [peter(), enoch()], require_all=False).signatures


def test_two_different_keys_with_the_same_name_and_id_are_ambiguous():
    clash = Verifier("PeterNeumann", ALG_ED25519, SigningKey.generate().verify_key.raw)
    object.__setattr__(clash, "key_id", peter().key_id)
    with pytest.raises(NoteError, match="ambiguous key PeterNeumann\\+c74f20a3"):
        open_note(GO_TEXT + "\n" + PETER_SIG, [peter(), clash])


def test_a_repeated_signature_line_counts_once():
    note = open_note(GO_TEXT + "\n" + PETER_SIG + PETER_SIG, [peter()])
    assert len(note.signatures) == 1


# Checkpoints.

def test_a_checkpoint_signed_by_the_audit_key_opens_with_its_verifier_key_string():
    signer = log_signer()
    signed = Checkpoint("portal.example/audit", 42, ROOT).sign(signer)
    assert signed.startswith(f"portal.example/audit\n42\n{base64.b64encode(ROOT).decode()}\n\n— portal.example/audit ")
    checkpoint, _ = open_checkpoint(signed, [Verifier.from_vkey(signer.vkey())], "portal.example/audit")
    assert checkpoint == Checkpoint("portal.example/audit", 42, ROOT)


def test_extension_lines_are_kept_and_signed():
    signer = log_signer()
    signed = Checkpoint("portal.example/audit", 3, ROOT, ("chain-head abc",)).sign(signer)
    checkpoint, _ = open_checkpoint(signed, [signer.verifier])
    assert checkpoint.extensions == ("chain-head abc",)
    with pytest.raises(NoteError, match="invalid signature"):
        open_checkpoint(signed.replace("chain-head abc", "chain-head abd"), [signer.verifier])


def test_a_checkpoint_from_another_origin_is_refused():
    signer = log_signer("other.example/log")
    with pytest.raises(NoteError, match="origin 'other.example/log' is not the expected 'portal.example/audit'"):
        open_checkpoint(Checkpoint("other.example/log", 1, ROOT).sign(signer), [signer.verifier], "portal.example/audit")


@pytest.mark.parametrize(("text", "message"), [
    ("portal\n42\n", "needs an origin, a tree size and a root hash"),
    ("\n42\nROOT\n\n", "origin line is empty"),
    ("portal\n042\nROOT\n", "not a decimal without leading zeros"),
    ("portal\n-1\nROOT\n", "not a decimal"),
    ("portal\n+1\nROOT\n", "not a decimal"),
    ("portal\n 1\nROOT\n", "not a decimal"),
    ("portal\n18446744073709551616\nROOT\n", "64 bits"),
    ("portal\nROOT\n42\n", "not a decimal"),
    ("portal\n42\nnot base64!\n", "root hash is not base64"),
    ("portal\n42\nYWJj\n", "must be 32 bytes, got 3"),
    ("portal\n42\nROOT\n\nextension\n", "empty extension line"),
    ("portal\n42\nROOT", "end with a newline"),
])
def test_a_malformed_or_reordered_checkpoint_body_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(text.replace("ROOT", base64.b64encode(ROOT).decode()))


def test_the_empty_tree_checkpoint_has_size_zero():
    empty = hashlib.sha256(b"").digest()
    assert Checkpoint.parse(Checkpoint("o", 0, empty).text()) == Checkpoint("o", 0, empty)


# Cosignatures.

def test_a_witness_cosignature_verifies_with_its_cosigner_key_and_carries_its_time():
    log, witness = log_signer(), witness_signer()
    text = Checkpoint("portal.example/audit", 7, ROOT).text()
    cosignature = witness.sign(text, timestamp=1_700_000_000)
    assert witness.vkey().split("+")[2].startswith(base64.b64encode(b"\x04").decode()[:1])
    assert cosignature_timestamp(cosignature) == 1_700_000_000
    cosigned = Note(text, (log.sign(text), cosignature)).encode()
    note = open_note(cosigned, [log.verifier, Verifier.from_vkey(witness.vkey())])
    assert [s.name for s in note.signatures] == ["portal.example/audit", "witness.example/w1"]


def test_a_cosignature_is_not_a_plain_signature_by_the_same_key():
    key = SigningKey.generate()
    cosigner = NoteSigner("witness.example/w1", key, ALG_COSIGNATURE_V1)
    plain = Verifier("witness.example/w1", ALG_ED25519, key.verify_key.raw)
    text = Checkpoint("o", 1, ROOT).text()
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(Note(text, (cosigner.sign(text, 1),)).encode(), [plain])


def test_a_cosignature_with_a_changed_time_does_not_verify():
    witness = witness_signer()
    text = Checkpoint("o", 1, ROOT).text()
    good = witness.sign(text, timestamp=1_700_000_000)
    moved = Signature(good.name, good.key_id, (1_700_000_001).to_bytes(8, "big") + good.signature[8:])
    with pytest.raises(NoteError, match="invalid signature for key witness.example/w1"):
        open_note(Note(text, (moved,)).encode(), [witness.verifier])


def test_a_cosigner_refuses_to_sign_without_a_positive_time():
    with pytest.raises(NoteError, match="positive POSIX timestamp"):
        witness_signer().sign(Checkpoint("o", 1, ROOT).text())
    with pytest.raises(NoteError, match="positive POSIX timestamp"):
        witness_signer().sign(Checkpoint("o", 1, ROOT).text(), timestamp=0)


def test_a_signer_key_string_round_trips_and_a_wrong_id_is_refused():
    signer = witness_signer()
    again = NoteSigner.from_signer_key(signer.signer_key())
    assert again.vkey() == signer.vkey()
    assert again.algorithm == ALG_COSIGNATURE_V1
    broken = signer.signer_key().replace(f"+{signer.key_id:08x}+", "+00000000+")
    with pytest.raises(NoteError, match="does not match"):
        NoteSigner.from_signer_key(broken)


def test_signing_text_without_a_final_newline_is_refused():
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("no newline", log_signer())
