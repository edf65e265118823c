"""Events, canonical leaf hashing, keys and signed tree checkpoints: the pieces every store and verifier builds on."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from audit import (
    AuditEvent,
    AuditFilter,
    Entry,
    SigningKey,
    canonical_json,
    generate_signing_key_pem,
    load_signing_key,
    load_verify_key,
    storable,
)
from audit.note import NoteError, NoteSigner, open_checkpoint
from audit.tree_checkpoints import CHAIN_HEAD_EXTENSION, sign_note

WHEN = datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=timezone.utc)


def test_event_rejects_unknown_outcome_naive_time_and_nested_details():
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent(action="chart.read", outcome="maybe")
    with pytest.raises(ValueError, match="timezone"):
        AuditEvent(action="chart.read", outcome="allowed", time=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="details"):
        AuditEvent(action="chart.read", outcome="allowed", details={"nested": {"a": 1}})
    with pytest.raises(ValueError, match="details"):
        AuditEvent(action="chart.read", outcome="allowed", details={str(n): n for n in range(17)})


def test_request_values_are_made_storable_not_refused():
    """Whatever a request carries (NUL, control characters, lone surrogates, megabytes) the event can be stored."""
    event = AuditEvent.create(action="chart.read", outcome="denied", user_agent="a\x00b\tc\ud800", reason="r" * 5000,
                              details={"filter\x1b": "x" * 1000})
    assert event.user_agent == "a\\x00b\\x09c\\ud800"
    assert len(event.reason) == 512 and event.reason.endswith("\u2026")
    assert dict(event.details) == {"filter\\x1b": "x" * 255 + "\u2026"}
    canonical_json(event.to_dict()).decode("utf-8")  # encodable: no surrogate is left
    assert AuditEvent.from_dict(event.to_dict()) == event  # idempotent, so a stored event hashes the same
    assert storable("caf\u00e9 \u2014 ok") == "caf\u00e9 \u2014 ok"


def test_an_event_read_back_from_the_log_keeps_exactly_what_was_stored():
    """Older versions stored control characters as sent: rebuilding must not escape them, or every
    verifier would call an intact log edited."""
    stored = AuditEvent(action="chart.read", outcome="denied", user_agent="Mozilla/5.0\t(X11) Clinic app \u0097 2.1")
    rebuilt = AuditEvent.from_dict(stored.to_dict())
    assert rebuilt == stored and rebuilt.user_agent == "Mozilla/5.0\t(X11) Clinic app \u0097 2.1"
    assert canonical_json(rebuilt.to_dict()) == canonical_json(stored.to_dict())


def test_event_round_trips_and_normalises_time_to_utc():
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    event = AuditEvent(action="chart.read", outcome="allowed", actor_id="u1", patient_id="p1",
                       details={"results": 3, "paged": True}, time=local)
    data = event.to_dict()
    assert data["time"] == "2024-03-01T12:30:05.123456Z"
    assert AuditEvent.from_dict(json.loads(json.dumps(data))) == event
    with pytest.raises(ValueError, match="unknown"):
        AuditEvent.from_dict({**data, "diagnosis": "x"})


def test_leaf_hash_is_the_rfc9162_leaf_of_canonical_seq_and_event():
    event = AuditEvent(action="signin.failure", outcome="denied", time=WHEN)
    entry = Entry(1, event)
    data = json.dumps({"seq": 1, "event": event.to_dict()}, sort_keys=True, separators=(",", ":")).encode()
    assert entry.leaf_data() == data
    assert entry.leaf_hash() == hashlib.sha256(b"\x00" + data).digest()
    assert entry.leaf_hash(2) != entry.leaf_hash()  # the seq is hashed: a moved entry is another leaf
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    record = json.loads(canonical_json(entry.to_record()))
    assert Entry.from_record(record) == entry and base64.b64decode(record["leaf_hash"]) == entry.leaf_hash()


def test_keys_load_from_pem_raw_base64_and_files(tmp_path):
    pem = generate_signing_key_pem()
    key = load_signing_key(pem.decode())
    path = tmp_path / "audit.pem"
    path.write_bytes(pem)
    assert load_signing_key(str(path)).key_id == key.key_id
    raw = base64.b64encode(key._key.private_bytes_raw()).decode()
    assert load_signing_key(raw).key_id == key.key_id
    assert load_verify_key(key.public_pem().decode()).key_id == key.key_id
    assert load_verify_key(key.public_raw_b64()).key_id == key.key_id
    assert key.key_id == hashlib.sha256(base64.b64decode(key.public_raw_b64())).hexdigest()[:16]
    with pytest.raises(ValueError):
        load_signing_key("not a key")


def test_a_tree_checkpoint_signature_covers_size_root_and_extension_lines():
    key = SigningKey.generate()
    signer = NoteSigner("portal.example/audit", key)
    chain_head = f"{CHAIN_HEAD_EXTENSION} 5 {'a' * 64}"
    note = sign_note(signer, 5, b"\x01" * 32, (chain_head,))
    checkpoint, _ = open_checkpoint(note, [signer.verifier], origin="portal.example/audit")
    assert (checkpoint.size, checkpoint.root_hash, checkpoint.extensions) == (5, b"\x01" * 32, (chain_head,))
    root_line = base64.b64encode(b"\x01" * 32).decode()
    for forged in (note.replace("\n5\n", "\n6\n"), note.replace(root_line, base64.b64encode(b"\x02" * 32).decode()),
                   note.replace(" 5 aaaa", " 5 baaa")):
        with pytest.raises(NoteError):
            open_checkpoint(forged, [signer.verifier])
    with pytest.raises(NoteError):
        open_checkpoint(note, [NoteSigner("portal.example/audit", SigningKey.generate()).verifier])


def test_filter_matches_and_describes():
    event = AuditEvent(action="chart.read", outcome="denied", actor_id="u1", patient_id="p1", time=WHEN)
    assert AuditFilter(actor_id="u1", outcome="denied", since=WHEN).matches(event)
    assert not AuditFilter(until=WHEN).matches(event)
    assert not AuditFilter(patient_id="p2").matches(event)
    assert AuditFilter().describe() == "all" and AuditFilter().is_empty
    assert AuditFilter(actor_id="u1", since=WHEN).describe() == "since=2024-03-01T12:30:05.123456Z actor_id=u1"
