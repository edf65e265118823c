"""The hash chain the audit log kept until migration 0007, written as the portal wrote it: what a test puts in
a database at an older revision to stand for a log from before the chain was retired."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import sqlalchemy as sa

from audit import AuditEvent, Entry, SigningKey, canonical_json
from audit.events import format_time
from audit.schema import UtcDateTime
from audit.store import entry_to_row

GENESIS_HASH = "0" * 64
_ENTRY_COLUMNS = ("seq", "actor_id", "actor_role", "action", "outcome", "patient_id", "resource_type", "resource_id",
                  "reason", "source_ip", "user_agent", "request_id", "session_hash", "details", "prev_hash", "entry_hash")
legacy_entry = sa.table("audit_entry", sa.column("time", UtcDateTime()), *(sa.column(name) for name in _ENTRY_COLUMNS))
legacy_checkpoint = sa.table("audit_checkpoint", sa.column("count"), sa.column("head_hash"),
                             sa.column("created", UtcDateTime()), sa.column("key_id"), sa.column("signature"),
                             sa.column("public_key"))


def chain_hash(seq: int, prev_hash: str, event: AuditEvent) -> str:
    """The retired entry hash: SHA-256 over canonical {seq, prev_hash, event}."""
    return hashlib.sha256(canonical_json({"seq": seq, "prev_hash": prev_hash, "event": event.to_dict()})).hexdigest()


def insert_chain(conn: sa.Connection, events: list[AuditEvent], key: SigningKey, checkpoint_every: int = 100,
                 head: tuple[int, str] = (0, GENESIS_HASH)) -> str:
    """Append `events` to the chain after `head` (seq, hash: by default its genesis), with a signed chain
    checkpoint at every multiple of `checkpoint_every`; returns the new head hash."""
    (last, prev_hash), rows = head, []
    for seq, event in enumerate(events, start=last + 1):
        entry_hash = chain_hash(seq, prev_hash, event)
        rows.append({**entry_to_row(Entry(seq, event)), "prev_hash": prev_hash, "entry_hash": entry_hash})
        prev_hash = entry_hash
        if seq % checkpoint_every == 0:
            insert_checkpoint(conn, seq, entry_hash, key)
    conn.execute(legacy_entry.insert(), rows)
    return prev_hash


def insert_checkpoint(conn: sa.Connection, count: int, head_hash: str, key: SigningKey) -> None:
    created = datetime.now(timezone.utc)
    payload = canonical_json({"count": count, "head_hash": head_hash, "created": format_time(created),
                              "key_id": key.key_id})
    conn.execute(legacy_checkpoint.insert(), {"count": count, "head_hash": head_hash, "created": created,
                                              "key_id": key.key_id, "signature": key.sign(payload),
                                              "public_key": key.public_raw_b64()})
