"""Signed tree checkpoints and their witness cosignatures in SQL (audit_tree_checkpoint, audit_tree_cosignature).

A tree checkpoint is a C2SP tlog-checkpoint (origin, tree size, base64 RFC 9162 root) signed as a
C2SP signed note with the log's Ed25519 audit key under the key name `origin` (audit/note.py). The
store signs one in the append transaction at every multiple of its `checkpoint_every` entries and
when the newest is older than its `checkpoint_seconds`, and on demand; every one is kept. The first
checkpoint of a log migrated from the old hash chain carries the chain's last head as an extension
line (`CHAIN_HEAD_EXTENSION`, see migration 0007). A witness's cosignature is kept beside it, as the note carrying
both signatures. These functions run inside the caller's connection or transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from audit import merkle, tree
from audit.note import Checkpoint as NoteCheckpoint
from audit.note import Note, NoteSigner
from audit.schema import audit_tree_checkpoint, audit_tree_cosignature

CHAIN_HEAD_EXTENSION = "audit-chain-head"
"""Extension line `audit-chain-head <entries> <hex SHA-256 head hash>`: the retired hash chain's head."""
_checkpoints = audit_tree_checkpoint.c
_cosignatures = audit_tree_cosignature.c


@dataclass(frozen=True)
class TreeCheckpoint:
    """One stored signed checkpoint: `note` is the signed note text."""

    id: int
    tree_size: int
    root_hash: bytes
    created: datetime
    note: str


@dataclass(frozen=True)
class TreeCosignature:
    """A witness's cosignature of the checkpoint of `tree_size`: `note` carries the log's and the witness's signatures."""

    id: int
    tree_size: int
    root_hash: bytes
    witness: str
    cosigned_at: datetime
    note: str


def _checkpoint(row: sa.Row) -> TreeCheckpoint:
    return TreeCheckpoint(row.id, row.tree_size, bytes(row.root_hash), row.created, row.note)


def _cosignature(row: sa.Row) -> TreeCosignature:
    return TreeCosignature(row.id, row.tree_size, bytes(row.root_hash), row.witness, row.cosigned_at, row.note)


def sign_note(signer: NoteSigner, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """The signed C2SP checkpoint note of the tree of `size` leaves with `root`, under the log's origin."""
    return NoteCheckpoint(signer.name, size, root, extensions).sign(signer)


def note_body(note: str) -> NoteCheckpoint:
    """The checkpoint a note states, read without checking its signatures (NoteError when it is none)."""
    return NoteCheckpoint.parse(Note.parse(note).text)


def sign(conn: sa.Connection, signer: NoteSigner, now: datetime | None = None, size: int | None = None,
         extensions: tuple[str, ...] = ()) -> TreeCheckpoint:
    """Sign and insert a checkpoint of the tree as stored in this transaction (under the append lock), of its
    first `size` leaves (default: all)."""
    size = tree.stored_size(conn) if size is None else size
    root = merkle.root(size, lambda addresses: tree.read_hashes(conn, addresses))
    note = sign_note(signer, size, root, extensions)
    created = now or datetime.now(timezone.utc)
    row = {"tree_size": size, "root_hash": root, "created": created, "note": note}
    identifier = conn.execute(audit_tree_checkpoint.insert().returning(_checkpoints.id), row).scalar_one()
    return TreeCheckpoint(identifier, size, root, created, note)


def latest(conn: sa.Connection) -> TreeCheckpoint | None:
    row = conn.execute(sa.select(audit_tree_checkpoint).order_by(_checkpoints.id.desc()).limit(1)).first()
    return _checkpoint(row) if row else None


def of_size(conn: sa.Connection, tree_size: int) -> TreeCheckpoint | None:
    """The first checkpoint signed of the tree of `tree_size` entries."""
    row = conn.execute(sa.select(audit_tree_checkpoint).where(_checkpoints.tree_size == tree_size)
                       .order_by(_checkpoints.id).limit(1)).first()
    return _checkpoint(row) if row else None


def first_missing_multiple(conn: sa.Connection, every: int, size: int, after: int = 0) -> int | None:
    """The smallest multiple of `every` in (after, size] of which no checkpoint is stored (None: none is missing).
    Reads one integer per multiple: a million entries at every 100 is 10,000 small rows."""
    stored = conn.execute(sa.select(_checkpoints.tree_size).distinct()
                          .where(_checkpoints.tree_size > after, _checkpoints.tree_size <= size,
                                 _checkpoints.tree_size % every == 0)
                          .order_by(_checkpoints.tree_size)).scalars()
    expected = (after // every + 1) * every
    for tree_size in stored:
        if tree_size != expected:
            return expected
        expected += every
    return expected if expected <= size else None


def all_checkpoints(conn: sa.Connection) -> list[TreeCheckpoint]:
    return [_checkpoint(row) for row in conn.execute(sa.select(audit_tree_checkpoint).order_by(_checkpoints.id))]


def record_cosignature(conn: sa.Connection, tree_size: int, root_hash: bytes, witness: str, cosigned_at: datetime,
                       note: str) -> TreeCosignature:
    row = {"tree_size": tree_size, "root_hash": root_hash, "witness": witness, "cosigned_at": cosigned_at,
           "note": note}
    identifier = conn.execute(audit_tree_cosignature.insert().returning(_cosignatures.id), row).scalar_one()
    return TreeCosignature(identifier, tree_size, root_hash, witness, cosigned_at, note)


def latest_cosignature(conn: sa.Connection, witness: str | None = None) -> TreeCosignature | None:
    """The cosignature of the largest tree (by `witness`, a `name+keyid`, when given)."""
    query = sa.select(audit_tree_cosignature).order_by(_cosignatures.tree_size.desc(), _cosignatures.id.desc())
    if witness is not None:
        query = query.where(_cosignatures.witness == witness)
    row = conn.execute(query.limit(1)).first()
    return _cosignature(row) if row else None


def first_unwitnessed(conn: sa.Connection, witnessed_size: int) -> TreeCheckpoint | None:
    """The oldest checkpoint of a tree larger than `witnessed_size`: how long the log has outgrown its witness."""
    row = conn.execute(sa.select(audit_tree_checkpoint).where(_checkpoints.tree_size > witnessed_size)
                       .order_by(_checkpoints.id).limit(1)).first()
    return _checkpoint(row) if row else None


def since(conn: sa.Connection, checkpoint_id: int) -> list[TreeCheckpoint]:
    """The checkpoint `checkpoint_id` (if it is still there) and every one signed after it, oldest first."""
    query = sa.select(audit_tree_checkpoint).where(_checkpoints.id >= checkpoint_id).order_by(_checkpoints.id)
    return [_checkpoint(row) for row in conn.execute(query)]


def latest_within(conn: sa.Connection, size: int) -> TreeCheckpoint | None:
    """The newest checkpoint of a tree of at most `size` leaves."""
    row = conn.execute(sa.select(audit_tree_checkpoint).where(_checkpoints.tree_size <= size)
                       .order_by(_checkpoints.id.desc()).limit(1)).first()
    return _checkpoint(row) if row else None
