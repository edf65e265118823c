"""RFC 9162 Merkle tree hashing, proofs from stored subtree hashes, and proof verification.

Hashes are exactly RFC 9162 §2.1: a leaf is SHA-256(0x00 ‖ data), an interior node
SHA-256(0x01 ‖ left ‖ right), the empty tree SHA-256(""). Trees of any size are split at the
largest power of two below their size, so they are the same trees Certificate Transparency,
transparency-dev/merkle and C2SP tlog-tiles use.

Storage model (the approach of Go's golang.org/x/mod/sumdb/tlog): a log never rewrites
anything, so the hash of every *complete* (perfect) subtree is computed once, when its last
leaf is appended, and stored under its address `(level, index)`: the subtree of 2**level
leaves starting at leaf index * 2**level. Level 0 holds the leaf hashes. Any range the
RFC 9162 algorithms need, [start, end), is covered by at most ~2·log2(n) such subtrees, so a
tree hash, an inclusion proof or a consistency proof reads O(log n) stored hashes through a
`HashReader` and never the leaves. Appending keeps a `frontier` (the roots of the perfect
subtrees that make up the current tree, left to right: one per set bit of the size), so an
append needs no reads beyond the frontier.

This module is pure: it knows nothing of databases. The verifiers follow
transparency-dev/merkle's `proof` package (RFC 9162 §2.1.3.2 and §2.1.4.2) and raise
`ProofError` naming what is wrong.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

Address = tuple[int, int]
"""(level, index): the perfect subtree of 2**level leaves starting at leaf index * 2**level."""

HashReader = Callable[[Sequence[Address]], Sequence[bytes]]
"""Returns the stored hash of each address, in the order asked; raises if one is missing."""


class ProofError(ValueError):
    """A proof, a size or a root that does not verify; the message names what is wrong."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def subtree_addresses(start: int, end: int) -> list[Address]:
    """The maximal perfect subtrees covering leaves [start, end), left to right.

    For every range the RFC 9162 recursion produces (start is a multiple of the largest power
    of two not above end - start), folding their hashes right to left gives MTH(D[start:end]).
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    addresses = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        addresses.append((level, start >> level))
        start += 1 << level
    return addresses


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect subtrees (left to right): combine from the right."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def tree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over all leaf hashes in memory (O(n)): the reference the stored form must agree with."""
    _, frontier = append_leaves([], 0, leaf_hashes, lambda address, digest: None)
    return fold(frontier)


def append_leaves(
    frontier: Sequence[bytes],
    size: int,
    leaf_hashes: Iterable[bytes],
    store: Callable[[Address, bytes], None],
) -> tuple[int, list[bytes]]:
    """Append leaves to a tree of `size` whose frontier is `frontier`.

    `frontier` holds the hashes of `subtree_addresses(0, size)`. Every hash that becomes
    complete (each leaf, and each subtree a leaf completes) is passed to `store(address,
    hash)` exactly once. Returns the new size and frontier.
    """
    stack = list(frontier)
    if len(stack) != size.bit_count():
        raise ValueError(f"a frontier of a tree of {size} leaves has {size.bit_count()} hashes, not {len(stack)}")
    for digest in leaf_hashes:
        store((0, size), digest)
        level, index = 0, size
        while index & 1:
            digest = node_hash(stack.pop(), digest)
            level, index = level + 1, index >> 1
            store((level, index), digest)
        stack.append(digest)
        size += 1
    return size, stack


def _read_ranges(ranges: Sequence[tuple[int, int]], read: HashReader) -> list[bytes]:
    """MTH of each range, with one batched read of all the stored hashes they need."""
    plans = [subtree_addresses(start, end) for start, end in ranges]
    wanted = [address for plan in plans for address in plan]
    hashes = list(read(wanted))
    if len(hashes) != len(wanted):
        raise ValueError(f"the hash reader returned {len(hashes)} hashes for {len(wanted)} addresses")
    result, offset = [], 0
    for plan in plans:
        result.append(fold(hashes[offset:offset + len(plan)]))
        offset += len(plan)
    return result


def _split(size: int) -> int:
    """The largest power of two strictly below size (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def root(size: int, read: HashReader) -> bytes:
    """MTH of the first `size` leaves, from at most log2(size)+1 stored hashes."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return _read_ranges([(0, size)], read)[0]


def inclusion_proof(index: int, size: int, read: HashReader) -> list[bytes]:
    """RFC 9162 PATH(index, D[size]), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    ranges = []
    low, high = 0, size
    while high - low > 1:
        k = _split(high - low)
        if index < low + k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low += k
    return _read_ranges(ranges[::-1], read)


def consistency_proof(old: int, new: int, read: HashReader) -> list[bytes]:
    """RFC 9162 PROOF(old, D[new]); empty when old is 0 or equal to new."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    ranges = []
    low, high, whole = 0, new, True
    while old != high:
        k = _split(high - low)
        if old <= low + k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low, whole = low + k, False
    if not whole:
        ranges.append((low, high))
    return _read_ranges(ranges[::-1], read)


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for position, digest in enumerate(proof):
        if len(digest) != HASH_SIZE:
            raise ProofError(f"{what} hash {position} has {len(digest)} bytes, not {HASH_SIZE}")


def _mismatch(what: str, calculated: bytes, expected: bytes) -> ProofError:
    return ProofError(f"{what}: the proof gives {calculated.hex()}, the expected root is {expected.hex()}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for leaf hash `leaf` at `index` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"the leaf hash has {len(leaf)} bytes, not {HASH_SIZE}")
    _check_hashes(proof, "inclusion proof")
    expected = _inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise ProofError(f"inclusion proof for leaf {index} of {size} has {len(proof)} hashes, not {expected}")
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return result


def _inclusion_proof_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` in the tree `expected_root`."""
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != expected_root:
        raise _mismatch(f"inclusion proof for leaf {index} of {size}", calculated, expected_root)


def root_from_consistency_proof(old: int, new: int, proof: Sequence[bytes], old_root: bytes) -> bytes:
    """The new root `proof` implies, after checking it against `old_root` (RFC 9162 §2.1.4.2).

    As in transparency-dev/merkle, a proof from the empty tree is refused as meaningless
    (anything is consistent with it: callers handle size 0 themselves), and equal sizes need
    an empty proof and give back `old_root`.
    """
    if not 0 <= old <= new:
        raise ProofError(f"the new size {new} is smaller than the old size {old}")
    if old == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if old == new:
        if proof:
            raise ProofError(f"equal sizes {old} need an empty consistency proof, not {len(proof)} hashes")
        return old_root
    if not proof:
        raise ProofError(f"the consistency proof from {old} to {new} is empty")
    _check_hashes(proof, "consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    expected = 1 + _steps_to_root(fn, sn)
    if len(path) != expected:
        given = len(proof)
        raise ProofError(f"consistency proof from {old} to {new} has {given} hashes, not {given + expected - len(path)}")
    first = second = path[0]
    for node in path[1:]:
        if fn & 1 or fn == sn:
            first, second = node_hash(node, first), node_hash(node, second)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, node)
        fn, sn = fn >> 1, sn >> 1
    if first != old_root:
        raise _mismatch(f"consistency proof from {old} to {new}, old tree", first, old_root)
    return second


def _steps_to_root(fn: int, sn: int) -> int:
    """How many proof hashes the RFC 9162 §2.1.4.2 loop consumes before sn reaches 0."""
    steps = 0
    while sn:
        if fn & 1 or fn == sn:
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
        steps += 1
    return steps


def verify_consistency(old: int, new: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Raise ProofError unless `proof` shows the tree `old_root` is a prefix of the tree `new_root`."""
    calculated = root_from_consistency_proof(old, new, proof, old_root)
    if calculated != new_root:
        raise _mismatch(f"consistency proof from {old} to {new}, new tree", calculated, new_root)
