"""Events, canonical hashing, keys and checkpoints: the pieces every store and verifier builds on."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditFilter,
    Checkpoint,
    Entry,
    SigningKey,
    canonical_json,
    generate_signing_key_pem,
    load_signing_key,
    load_verify_key,
    storable,
)

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


def test_entry_hash_is_sha256_of_canonical_seq_prev_event():
    event = AuditEvent(action="signin.failure", outcome="denied", time=WHEN)
    entry = Entry.create(1, GENESIS_HASH, event)
    expected = hashlib.sha256(
        json.dumps({"seq": 1, "prev_hash": GENESIS_HASH, "event": event.to_dict()},
                   sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert entry.entry_hash == expected
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert Entry.from_record(json.loads(canonical_json(entry.to_record()))) == entry


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


def test_checkpoint_signature_covers_count_head_and_time():
    key = SigningKey.generate()
    checkpoint = Checkpoint.sign(5, "a" * 64, key, created=WHEN)
    assert checkpoint.signature_ok(key.verify_key)
    for forged in (
        Checkpoint(6, checkpoint.head_hash, WHEN, key.key_id, checkpoint.signature),
        Checkpoint(5, "b" * 64, WHEN, key.key_id, checkpoint.signature),
        Checkpoint(5, checkpoint.head_hash, WHEN + timedelta(seconds=1), key.key_id, checkpoint.signature),
    ):
        assert not forged.signature_ok(key.verify_key)
    assert not checkpoint.signature_ok(SigningKey.generate().verify_key)


def test_filter_matches_and_describes():
    event = AuditEvent(action="chart.read", outcome="denied", actor_id="u1", patient_id="p1", time=WHEN)
    assert AuditFilter(actor_id="u1", outcome="denied", since=WHEN).matches(event)
    assert not AuditFilter(until=WHEN).matches(event)
    assert not AuditFilter(patient_id="p2").matches(event)
    assert AuditFilter().describe() == "all" and AuditFilter().is_empty
    assert AuditFilter(actor_id="u1", since=WHEN).describe() == "since=2024-03-01T12:30:05.123456Z actor_id=u1"
