"""The signed record of the last verified checkpoint (audit.incremental.VerifiedHead): it is used only when the
log's key signed exactly it, under the records' own key name, so someone with the database cannot move the
point incremental runs start from."""
from __future__ import annotations

import hashlib

import pytest

from audit import SigningKey
from audit.incremental import VerifiedHead, record_verifier
from audit.note import Checkpoint, NoteError, NoteSigner, b64encode

KEY = SigningKey.generate()
ORIGIN = "portal.test/audit"
HEAD = VerifiedHead(7, 271, hashlib.sha256(b"root").digest())


def _log():
    return NoteSigner(ORIGIN, KEY).verifier


def test_a_record_signed_with_the_log_key_reads_back():
    details = HEAD.signed_details(ORIGIN, KEY)
    assert VerifiedHead.from_details(details, _log()) == HEAD


@pytest.mark.parametrize("change", [
    {"verified_checkpoint": 8},
    {"verified_size": 400},
    {"verified_root": b64encode(hashlib.sha256(b"other").digest())},
])
def test_a_record_moved_to_another_checkpoint_does_not_verify(change):
    with pytest.raises(NoteError, match="invalid signature"):
        VerifiedHead.from_details({**HEAD.signed_details(ORIGIN, KEY), **change}, _log())


def test_a_record_signed_with_another_key_does_not_verify():
    with pytest.raises(NoteError):
        VerifiedHead.from_details(HEAD.signed_details(ORIGIN, SigningKey.generate()), _log())


def test_a_records_signature_is_no_checkpoint_signature_and_a_checkpoint_signature_is_no_record():
    record = HEAD.signed_details(ORIGIN, KEY)
    assert record_verifier(_log()).key() != _log().key()  # another key name, so another key id
    checkpoint_signature = NoteSigner(ORIGIN, KEY).sign(HEAD.text(ORIGIN))
    forged = {**record, "verified_signature": b64encode(checkpoint_signature.key_id.to_bytes(4, "big")
                                                        + checkpoint_signature.signature)}
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        VerifiedHead.from_details(forged, _log())
    assert not HEAD.text(ORIGIN).startswith(Checkpoint(ORIGIN, HEAD.size, HEAD.root).text())


@pytest.mark.parametrize("details, why", [
    ({"ok": True, "entries": 12}, "names no signed checkpoint"),
    ({"verified_checkpoint": "7", "verified_size": 271, "verified_root": "x", "verified_signature": "y"}, "malformed"),
    ({"verified_checkpoint": True, "verified_size": 271, "verified_root": "x", "verified_signature": "y"}, "malformed"),
    ({"verified_checkpoint": 7, "verified_size": 271, "verified_root": "not base64!", "verified_signature": "y"},
     "not base64"),
])
def test_a_missing_or_malformed_record_is_refused_with_the_reason(details, why):
    with pytest.raises(NoteError, match=why):
        VerifiedHead.from_details(details, _log())
