"""Incremental verification of the SQL audit log from the last verified checkpoint, in O(new + log n),
and the signed record that says which checkpoint that was.

The record (`VerifiedHead`): a verification that passed names the newest signed tree checkpoint it
found consistent with the entries it hashed (its id, size and root) and signs that statement with the
log's Ed25519 key under a note key name of its own, `<origin>/verified`. Another key name means
another key id, and the text starts with another line, so a record can never pass for a checkpoint
(or a checkpoint for a record). The portal keeps it in the details of its audit.verify event, inside
the log itself, and a reader uses it only if its signature verifies. Someone with the database but not
the key can delete it (the next run is full, or starts from an older record), replay an older one, or
write one that does not verify (the next run is full): none of it moves the starting point past what
the portal itself verified.

The run (`verify_since`), from a record whose signature verified:

1. the checkpoint it names is still stored, verifies with the log key and states the record's size
   and root (else checkpoint_mismatch: the portal signed that it verified exactly that checkpoint);
2. the stored tree's frontier of that size folds to that root, the entries after it are re-hashed and
   every tree hash they complete is compared with the stored one, and the stored tree is consistent
   with the trusted root (audit/tree_verify.py);
3. every checkpoint signed after it verifies with the log key, states its row's size and root and is
   held by the verified tree (its size at most the verified size, its root the verified tree's root
   at that size); the consistency proof from the trusted head to the newest checkpoint is checked;
4. no row lies outside the tree (a seq below 1), and the entries after the trusted size are
   consecutive up to the tree's size (step 2), which together are the row count of the new part.

Entries before the trusted size are not read: an edit there that left the stored tree alone is found
only by a full run. `check_witnessed` compares the witness's checkpoint with the verified tree in
O(log n), where audit.witnessed.check_against_witness re-hashes every entry up to it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from audit import tree_checkpoints
from audit.entries import SigningKey
from audit.errors import Problem, TreeError
from audit.merkle import EMPTY_ROOT, ProofError, fold, subtree_addresses, verify_consistency
from audit.note import (
    ALG_ED25519,
    SIGNATURE_PREFIX,
    Checkpoint,
    NoteError,
    NoteSigner,
    Verifier,
    b64decode_strict,
    b64encode,
    open_checkpoint,
    open_note,
)
from audit.store import SqlAuditStore
from audit.tree_checkpoints import TreeCheckpoint
from audit.tree_verify import TreeHead, verify_tree

RECORD_HEADER = "audit-verified/v1"
RECORD_KEY_SUFFIX = "/verified"
HASH_SIZE = 32


def record_verifier(log: Verifier) -> Verifier:
    """The key that checks verification records: the log's public key under `<origin>/verified`."""
    return Verifier(log.name + RECORD_KEY_SUFFIX, ALG_ED25519, log.public_key)


@dataclass(frozen=True)
class VerifiedHead:
    """A signed tree checkpoint that a verification found consistent with the entries it hashed."""

    checkpoint_id: int
    size: int
    root: bytes

    @property
    def tree_head(self) -> TreeHead:
        return TreeHead(self.size, self.root)

    def text(self, origin: str) -> str:
        return f"{RECORD_HEADER}\n{origin}\n{self.checkpoint_id}\n{self.size}\n{b64encode(self.root)}\n"

    def signed_details(self, origin: str, key: SigningKey) -> dict[str, Any]:
        """What the audit.verify event keeps of it: the checkpoint, and the signature (key id and bytes) by the
        log's key under the records' key name (see record_verifier)."""
        signature = NoteSigner(origin + RECORD_KEY_SUFFIX, key).sign(self.text(origin))
        return {"verified_checkpoint": self.checkpoint_id, "verified_size": self.size,
                "verified_root": b64encode(self.root),
                "verified_signature": b64encode(signature.key_id.to_bytes(4, "big") + signature.signature)}

    @classmethod
    def from_details(cls, details: Mapping[str, Any], log: Verifier) -> VerifiedHead:
        """The record in an audit.verify event's details; NoteError says why it cannot be used."""
        values = [details.get(name) for name in ("verified_checkpoint", "verified_size", "verified_root",
                                                 "verified_signature")]
        if all(value is None for value in values):
            raise NoteError("it names no signed checkpoint")
        checkpoint_id, size, root, signature = values
        if not (_whole(checkpoint_id) and _whole(size) and isinstance(root, str) and isinstance(signature, str)):
            raise NoteError("its record of the checkpoint is malformed")
        head = cls(checkpoint_id, size, b64decode_strict(root, "its root"))
        if len(head.root) != HASH_SIZE:
            raise NoteError("its root is not a SHA-256 hash")
        verifier = record_verifier(log)
        open_note(f"{head.text(log.name)}\n{SIGNATURE_PREFIX}{verifier.name} {signature}\n", [verifier])
        return head


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class IncrementalReport:
    """The outcome of `verify_since`; `anchor` is the checkpoint the next run may start from (when ok)."""

    ok: bool
    since: VerifiedHead
    entries_checked: int
    checkpoints_checked: int
    tree: TreeHead | None = None
    anchor: VerifiedHead | None = None
    problem: Problem | None = None


class _Found(Exception):
    def __init__(self, position: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(position, kind, message)


def _opened(checkpoint: TreeCheckpoint, log: Verifier) -> Checkpoint:
    """The checkpoint's note, verified with the log key, stating exactly its row's size and root."""
    try:
        body, _ = open_checkpoint(checkpoint.note, [log], origin=log.name)
    except NoteError as exc:
        raise _Found(checkpoint.tree_size, "bad_checkpoint_signature",
                     f"tree checkpoint {checkpoint.id} ({checkpoint.tree_size} entries) does not verify: {exc}") from None
    if (body.size, body.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
        raise _Found(checkpoint.tree_size, "checkpoint_mismatch",
                     f"tree checkpoint {checkpoint.id}'s row does not state what its signed note states")
    return body


def _trusted(stored: list[TreeCheckpoint], since: VerifiedHead, log: Verifier) -> None:
    if not stored or stored[0].id != since.checkpoint_id:
        raise _Found(since.size, "checkpoint_mismatch",
                     f"tree checkpoint {since.checkpoint_id} ({since.size} entries), which the last verification "
                     "ended at, is no longer stored")
    body = _opened(stored[0], log)
    if (body.size, body.root_hash) != (since.size, since.root):
        raise _Found(since.size, "checkpoint_mismatch",
                     f"tree checkpoint {since.checkpoint_id} is not the one the last verification ended at")


def stored_root(store: SqlAuditStore, size: int) -> bytes:
    """The root folded from the stored hashes of the tree of `size` leaves (trust it only once they are verified)."""
    return fold(store.stored_hashes(subtree_addresses(0, size)))


def _held(store: SqlAuditStore, body: Checkpoint, since: VerifiedHead, verified: TreeHead) -> None:
    """The verified tree holds the signed checkpoint `body` (sizes and roots all signed or re-derived)."""
    if body.size > verified.size:
        raise _Found(verified.size + 1, "truncated",
                     f"a signed checkpoint covers {body.size} entries, the tree holds {verified.size}")
    if body.size < since.size:
        _consistent(store, body.size, since.size, body.root_hash, since.root)
    elif stored_root(store, body.size) != body.root_hash:
        # Past the trusted size every hash folded here was re-derived from the entries (or is the trusted frontier).
        raise _Found(body.size, "checkpoint_mismatch",
                     f"the signed checkpoint of {body.size} entries has another root than the verified tree")


def _newer(store: SqlAuditStore, log: Verifier, since: VerifiedHead, newer: list[TreeCheckpoint],
           verified: TreeHead) -> VerifiedHead:
    """Check the checkpoints signed after the trusted one; the newest the verified tree holds."""
    anchor, newest = since, None
    for checkpoint in newer:
        body = _opened(checkpoint, log)
        _held(store, body, since, verified)
        newest = body
        if body.size >= anchor.size:
            anchor = VerifiedHead(checkpoint.id, body.size, body.root_hash)
    if newest is not None and newest.size > since.size:
        _consistent(store, since.size, newest.size, since.root, newest.root_hash)
    return anchor


def _consistent(store: SqlAuditStore, old: int, new: int, old_root: bytes, new_root: bytes) -> None:
    """ProofError unless the stored consistency proof shows the tree `old_root` is a prefix of `new_root`."""
    if old == 0:  # every tree extends the empty one, whose root is fixed
        if old_root != EMPTY_ROOT:
            raise ProofError("a checkpoint of the empty tree states another root than the empty tree's")
        return
    verify_consistency(old, new, store.consistency_proof(old, new), old_root, new_root)


def verify_since(store: SqlAuditStore, log: Verifier, since: VerifiedHead,
                 progress: Callable[[int], Any] | None = None) -> IncrementalReport:
    """Verify what the log gained since the verified checkpoint `since` (see the module docstring); never raises
    on tampering. `log` is the log's note verifier key."""
    report = IncrementalReport(False, since, 0, 0)
    try:
        with store.engine.connect() as conn:
            stored = tree_checkpoints.since(conn, since.checkpoint_id)  # read before the tree's size is fixed
        _trusted(stored, since, log)
        tree = verify_tree(store, since.tree_head, progress)
        report.entries_checked = tree.entries_checked
        if not tree.ok:
            report.problem = tree.problem
            return report
        missing = store.first_missing_checkpoint(tree.head.size, after=since.size)
        if missing is not None:  # as a full run requires: deleted, or never signed over this tree
            raise _Found(missing, "checkpoint_missing", f"checkpoint missing at seq {missing}")
        report.anchor = _newer(store, log, since, stored[1:], tree.head)
        report.checkpoints_checked = len(stored)
        if store.count_through(0):
            raise _Found(0, "inserted", "rows outside the tree (seq below 1): the log holds entries no tree accounts for")
        report.ok, report.tree = True, tree.head
    except _Found as found:
        report.problem = found.problem
    except (ProofError, TreeError) as exc:
        report.problem = Problem(since.size, "inconsistent", f"the signed checkpoints are not consistent: {exc}")
    return report


def anchor_after_full(store: SqlAuditStore, log: Verifier, verified: TreeHead) -> VerifiedHead | Problem | None:
    """After a full verification of the tree of `verified.size` leaves: the newest checkpoint within it, checked
    (signature, and the verified tree's root at its size), as the record the next run starts from."""
    with store.engine.connect() as conn:
        checkpoint = tree_checkpoints.latest_within(conn, verified.size)
    if checkpoint is None:
        return None
    try:
        body = _opened(checkpoint, log)
        if stored_root(store, body.size) != body.root_hash:
            raise _Found(body.size, "checkpoint_mismatch",
                         f"the signed checkpoint of {body.size} entries has another root than the verified tree")
    except _Found as found:
        return found.problem
    return VerifiedHead(checkpoint.id, body.size, body.root_hash)


def check_witnessed(store: SqlAuditStore, witnessed: Checkpoint, verified: TreeHead) -> Problem | None:
    """The first way the verified tree disagrees with the checkpoint the witness cosigned, in O(log n): the log
    must hold it, and the consistency proof between it and the verified head must check."""
    held = store.tree_size()
    size, root = witnessed.size, witnessed.root_hash
    if held < size:
        return Problem(held, "truncated", f"truncated: the witness cosigned {size} entries, the log holds {held}")
    try:
        if size <= verified.size:
            _consistent(store, size, verified.size, root, verified.root)
        else:  # cosigned while this run hashed: the tree it signed must extend the verified one
            _consistent(store, verified.size, size, verified.root, root)
            if stored_root(store, size) != root:
                raise ProofError(f"the stored tree at size {size} does not have the witnessed root")
    except (ProofError, TreeError) as exc:
        return Problem(size, "checkpoint_mismatch",
                       f"the log is not consistent with the checkpoint its witness cosigned: {exc}")
    return None
