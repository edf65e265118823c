"""Checking a log against the checkpoint its witness last cosigned: what catches a lost or rewritten tail.

The witness keeps its own state, which the database's owner cannot edit. Its latest cosigned
checkpoint for the log's origin (`GET <witness>/<sha256 hex of origin>/checkpoint`, c2sp.org/tlog-witness)
is fetched, both signatures are checked (the log's key, so the witness cannot invent a log; the
witness's cosignature, so a man in the middle cannot), and then the log must still hold at least
that many entries, its entries must hash to that root, its stored tree must have that root, and the
current tree must be consistent with it. A log whose tail was deleted (with or without its
checkpoints), which was emptied, or rewritten and re-hashed without the signing key fails here.
"""
from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from audit import merkle
from audit.errors import TreeError
from audit.note import Checkpoint, NoteError, Verifier, cosignature_timestamp, open_checkpoint
from audit.store import AuditStore
from audit.verify import Problem
from audit.witness import MAX_BODY_BYTES
from audit.witness_client import DEFAULT_TIMEOUT_SECONDS, WitnessAnswerError, WitnessUnreachable

LEAF_BATCH = 4096


@dataclass(frozen=True)
class Witnessed:
    """The witness's latest cosigned checkpoint of the log, both signatures verified."""

    checkpoint: Checkpoint
    cosigned_at: int
    note: str


def checkpoint_url(url: str, origin: str) -> str:
    """Where a C2SP witness serves its latest cosigned checkpoint of `origin`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"the witness URL {url!r} is not an http(s) URL")
    return f"{url.rstrip('/')}/{hashlib.sha256(origin.encode('utf-8')).hexdigest()}/checkpoint"


def fetch_witnessed(url: str, log: Verifier, witness: Verifier,
                    timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Witnessed | None:
    """The witness's latest cosigned checkpoint of the log whose key is `log` (None: it has cosigned none).

    Raises WitnessUnreachable when the witness does not answer, WitnessAnswerError when its answer is
    not a checkpoint of this log signed by `log` and cosigned by `witness`.
    """
    address = checkpoint_url(url, log.name)
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return None
        if exc.code >= 500:
            raise WitnessUnreachable(f"witness {address} failed ({exc.code})") from None
        raise WitnessAnswerError(f"witness {address} answered {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise WitnessUnreachable(f"witness {address} did not answer: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise WitnessAnswerError("the witness's checkpoint is too large")
    try:
        checkpoint, note = open_checkpoint(body, [log, witness], origin=log.name)
        cosignature = next(signature for signature in note.signatures if witness.matches(signature))
        return Witnessed(checkpoint, cosignature_timestamp(cosignature), body.decode("utf-8"))
    except NoteError as exc:
        raise WitnessAnswerError(f"the witness's checkpoint of {log.name} does not verify: {exc}") from None


def _leaf_batches(store: AuditStore, size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for expected, entry in enumerate(store.iter_entries(), start=1):
        if expected > size:
            break
        if entry.seq != expected:
            raise TreeError(f"audit entry seq {entry.seq} where {expected} belongs")
        batch.append(entry.leaf_hash())
        if len(batch) == LEAF_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _root_of_entries(store: AuditStore, size: int) -> tuple[int, bytes]:
    """How many of the first `size` entries the log holds in order, and the RFC 9162 root of them."""
    count, frontier = 0, []
    for batch in _leaf_batches(store, size):
        count, frontier = merkle.append_leaves(frontier, count, batch, lambda address, digest: None)
    return count, merkle.fold(frontier)


def check_against_witness(store: AuditStore, witnessed: Checkpoint,
                          entries_root: bytes | None = None) -> Problem | None:
    """The first way the log disagrees with the checkpoint its witness cosigned, or None. `entries_root`: the
    root of the first `witnessed.size` entries when a verified full pass has derived it (VerifyReport.roots),
    so they are not read again."""
    size, root = witnessed.size, witnessed.root_hash
    held = min(store.head_seq(), store.tree_size())
    if held < size:
        return Problem(held, "truncated", f"truncated: the witness cosigned {size} entries, the log holds {held}")
    try:
        count, entries_root = (size, entries_root) if entries_root is not None else _root_of_entries(store, size)
    except TreeError as exc:
        return Problem(size, "deleted", f"the entries up to the witnessed size {size} are not in order: {exc}")
    if count < size:
        return Problem(count, "truncated", f"truncated: the witness cosigned {size} entries, the log holds {count}")
    if entries_root != root:
        return Problem(size, "checkpoint_mismatch",
                       f"the log's first {size} entries do not hash to the root the witness cosigned "
                       "(rewritten, reordered or forked)")
    try:
        if store.root(size) != root:
            return Problem(size, "checkpoint_mismatch",
                           f"the stored tree at size {size} does not have the root the witness cosigned")
        current = store.tree_size()
        merkle.verify_consistency(size, current, store.consistency_proof(size, current), root, store.root(current))
    except (TreeError, merkle.ProofError) as exc:
        return Problem(size, "checkpoint_mismatch", f"the stored tree is not consistent with the witnessed one: {exc}")
    return None
