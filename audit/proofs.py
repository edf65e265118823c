"""Proof documents: the JSON `python -m audit prove-*` prints, and checking one offline, with no database.

An inclusion document names a tree (tree_size, root_hash), a leaf (leaf_index, leaf_hash, and the
entry whose canonical JSON is the leaf's data) and its RFC 9162 inclusion_path; a consistency
document names two trees (tree_size_1/root_hash_1, tree_size_2/root_hash_2) and the
consistency_path between them. Hashes are standard base64.

A document proves something only against a tree head (size and root) the checker trusts, from a
signed or witnessed checkpoint: the sizes and roots written in the document are the log's own
claim (and an inclusion proof alone does not pin the tree size: the same path can fit two sizes). Checking raises
ValueError for a document that cannot be read and audit.merkle.ProofError (a ValueError too)
for one that does not prove what it says.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from audit.entries import canonical_json, parse_json
from audit.errors import TreeError
from audit.merkle import HASH_SIZE, ProofError, leaf_hash, verify_consistency, verify_inclusion
from audit.store import AuditStore


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def decode_hash(text: Any, what: str) -> bytes:
    """A base64 SHA-256 hash; ValueError naming `what` otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != HASH_SIZE:
        raise ValueError(f"{what} has {len(raw)} bytes, not {HASH_SIZE}")
    return raw


def inclusion_document(size: int, index: int, root: bytes, leaf: bytes, path: Sequence[bytes],
                       entry: dict[str, Any]) -> dict[str, Any]:
    return {"tree_size": size, "leaf_index": index, "root_hash": b64(root), "leaf_hash": b64(leaf),
            "inclusion_path": [b64(digest) for digest in path], "entry": entry}


def consistency_document(old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> dict[str, Any]:
    return {"tree_size_1": old, "tree_size_2": new, "root_hash_1": b64(old_root), "root_hash_2": b64(new_root),
            "consistency_path": [b64(digest) for digest in path]}


def prove_inclusion(store: AuditStore, index: int, size: int | None = None) -> dict[str, Any]:
    """The inclusion document of leaf ``index`` in the tree of ``size`` entries (default: the whole log), checked
    before it is handed out: the stored leaf must be the hash of the entry, and the path must reach the root.
    A size or index beyond the log raises ValueError; a stored tree that does not match raises TreeError."""
    size = size or store.tree_size()
    path = store.inclusion_proof(index, size)
    entry = next(store.iter_entries(after_seq=index), None)
    leaf = store.leaf_hash(index)
    if entry is None or entry.seq != index + 1 or entry.leaf_hash() != leaf:
        raise TreeError(f"the stored leaf hash of index {index} is not the hash of entry seq {index + 1}")
    root = store.root(size)
    verify_inclusion(index, size, leaf, path, root)
    return inclusion_document(size, index, root, leaf, path, json.loads(entry.leaf_data()))


def prove_consistency(store: AuditStore, old: int, new: int | None = None) -> dict[str, Any]:
    """The consistency document from the tree of ``old`` entries to that of ``new`` (default: the whole log)."""
    new = new or store.tree_size()
    path = store.consistency_proof(old, new)
    old_root, new_root = store.root(old), store.root(new)
    verify_consistency(old, new, path, old_root, new_root)
    return consistency_document(old, new, old_root, new_root, path)


def load_document(text: str) -> dict[str, Any]:
    try:
        document = parse_json(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("a proof document is a JSON object")
    return document


def _size(document: dict[str, Any], key: str) -> int:
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a whole number of at least 0")
    return value


def _path(document: dict[str, Any], key: str) -> list[bytes]:
    values = document.get(key)
    if not isinstance(values, list):
        raise ValueError(f"{key} must be a list of base64 hashes")
    return [decode_hash(value, f"{key}[{position}]") for position, value in enumerate(values)]


TrustedHead = tuple[int, bytes]
"""(tree size, root) of a verified checkpoint."""


def parse_tree_head(text: str, what: str) -> TrustedHead:
    """`SIZE:BASE64ROOT`, as the CLI takes a trusted tree head."""
    size, sep, root = text.partition(":")
    if not sep or not size.isdigit():
        raise ValueError(f"{what} must be SIZE:BASE64ROOT")
    return int(size), decode_hash(root, what)


def _head(document: dict[str, Any], size_key: str, root_key: str, trusted: TrustedHead | None) -> TrustedHead:
    size, root = _size(document, size_key), decode_hash(document.get(root_key), root_key)
    if trusted is not None and size != trusted[0]:
        raise ProofError(f"{size_key} {size} is not the trusted tree size {trusted[0]}")
    if trusted is not None and root != trusted[1]:
        raise ProofError(f"{root_key} is not the trusted root")
    return size, root


def check_inclusion(document: dict[str, Any], trusted: TrustedHead | None = None) -> str:
    """Verify an inclusion document; returns a one-line description of what it proved."""
    size, root = _head(document, "tree_size", "root_hash", trusted)
    index = _size(document, "leaf_index")
    leaf = decode_hash(document.get("leaf_hash"), "leaf_hash")
    path = _path(document, "inclusion_path")
    entry = document.get("entry")
    if entry is not None:
        if not isinstance(entry, dict):
            raise ValueError("entry must be a JSON object")
        if entry.get("seq") != index + 1:
            raise ProofError(f"the entry's seq {entry.get('seq')!r} is not leaf_index + 1 = {index + 1}")
        if leaf_hash(canonical_json(entry)) != leaf:
            raise ProofError("the entry does not hash to leaf_hash: it was changed")
    verify_inclusion(index, size, leaf, path, root)
    what = f"entry seq {index + 1}" if entry is not None else f"leaf {index}"
    return f"{what} is in the tree of {size} entries with root {b64(root)}"


def check_consistency(document: dict[str, Any], trusted_old: TrustedHead | None = None,
                      trusted_new: TrustedHead | None = None) -> str:
    """Verify a consistency document; returns a one-line description of what it proved."""
    old, old_root = _head(document, "tree_size_1", "root_hash_1", trusted_old)
    new, new_root = _head(document, "tree_size_2", "root_hash_2", trusted_new)
    verify_consistency(old, new, _path(document, "consistency_path"), old_root, new_root)
    return f"the tree of {old} entries with root {b64(old_root)} is a prefix of the tree of {new} with root {b64(new_root)}"
