"""The RFC 9162 tree of audit/merkle.py, checked against transparency-dev/merkle's published vectors
and against pymerkle, a second implementation (a test dependency only).

The vectors (tests/vectors/transparency_dev_merkle, Apache-2.0, see its NOTICE) are proofs over
the eight leaves of transparency-dev/merkle's testonly.LeafInputs(): happy paths our prover
must reproduce byte for byte, and corrupted variants our verifiers must refuse.
"""
from __future__ import annotations

import base64
import hashlib
import json

import pymerkle
import pytest

from audit.merkle import (
    EMPTY_ROOT,
    ProofError,
    append_leaves,
    consistency_proof,
    fold,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_inclusion_proof,
    subtree_addresses,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.support.environment import ROOT

VECTORS = ROOT / "tests" / "vectors" / "transparency_dev_merkle" / "testdata"
LEAF_INPUTS = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                          "606162636465666768696a6b6c6d6e6f")]


class StoredTree:
    """Stored hashes in a dict, with a reader that counts what each proof reads."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size, self.frontier = append_leaves([], 0, [leaf_hash(leaf) for leaf in leaves], self.nodes.__setitem__)
        self.reads = 0

    def read(self, addresses):
        self.reads += len(addresses)
        return [self.nodes[address] for address in addresses]


def _load(kind: str) -> list[tuple[str, dict]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 80, f"the {kind} vectors are missing"
    return [(str(path.relative_to(VECTORS)), json.loads(path.read_text())) for path in files]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _hashes(values: list[str] | None) -> list[bytes]:
    return [_b64(value) for value in values or []]


def _vector_ids(vectors: list[tuple[str, dict]]) -> list[str]:
    return [name for name, _ in vectors]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def test_leaf_and_node_hashes_carry_the_rfc_9162_domain_prefixes():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert tree_hash([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == _b64("bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=")  # the vectors' first leaf


def test_a_tree_of_n_leaves_splits_at_the_largest_power_of_two_below_n():
    hashes = [leaf_hash(bytes([n])) for n in range(7)]
    left = node_hash(node_hash(hashes[0], hashes[1]), node_hash(hashes[2], hashes[3]))
    right = node_hash(node_hash(hashes[4], hashes[5]), hashes[6])
    assert tree_hash(hashes) == node_hash(left, right)


def test_the_perfect_subtrees_of_a_range_are_maximal_and_aligned():
    assert subtree_addresses(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_addresses(8, 13) == [(2, 2), (0, 12)]
    assert subtree_addresses(0, 0) == []
    assert fold([]) == EMPTY_ROOT


@pytest.mark.parametrize(("name", "vector"), INCLUSION, ids=_vector_ids(INCLUSION))
def test_inclusion_vectors_verify_exactly_when_transparency_dev_says_so(name, vector):
    args = (vector["leafIdx"], vector["treeSize"], _b64(vector["leafHash"]), _hashes(vector["proof"]),
            _b64(vector["root"]))
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(("name", "vector"), CONSISTENCY, ids=_vector_ids(CONSISTENCY))
def test_consistency_vectors_verify_exactly_when_transparency_dev_says_so(name, vector):
    args = (vector["size1"], vector["size2"], _hashes(vector["proof"]), _b64(vector["root1"]), _b64(vector["root2"]))
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_our_proofs_equal_the_happy_path_vectors_byte_for_byte():
    tree = StoredTree(LEAF_INPUTS)
    checked = 0
    for _, vector in INCLUSION:
        if vector["desc"] == "happy path" and vector["treeSize"] <= len(LEAF_INPUTS) and vector["proof"] is not None:
            index, size = vector["leafIdx"], vector["treeSize"]
            assert inclusion_proof(index, size, tree.read) == _hashes(vector["proof"])
            assert root(size, tree.read) == tree_hash([leaf_hash(x) for x in LEAF_INPUTS[:size]]) == _b64(vector["root"])
            checked += 1
    for _, vector in CONSISTENCY:
        if vector["desc"] == "happy path":
            old, new = vector["size1"], vector["size2"]
            assert consistency_proof(old, new, tree.read) == _hashes(vector["proof"])
            assert root(old, tree.read) == _b64(vector["root1"]) and root(new, tree.read) == _b64(vector["root2"])
            checked += 1
    assert checked >= 8


def test_every_proof_in_a_tree_of_up_to_40_leaves_verifies_and_matches_the_in_memory_tree():
    leaves = [f"entry {n}".encode() for n in range(40)]
    tree = StoredTree(leaves)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    roots = [tree_hash(hashes[:size]) for size in range(41)]
    for size in range(1, 41):
        assert root(size, tree.read) == roots[size]
        for index in range(size):
            verify_inclusion(index, size, hashes[index], inclusion_proof(index, size, tree.read), roots[size])
        for old in range(1, size + 1):
            verify_consistency(old, size, consistency_proof(old, size, tree.read), roots[old], roots[size])


def test_a_proof_reads_a_logarithmic_number_of_stored_hashes_not_the_leaves():
    tree = StoredTree([n.to_bytes(4, "big") for n in range(5000)])
    for ask in (lambda: inclusion_proof(1234, 4999, tree.read), lambda: consistency_proof(1337, 4999, tree.read),
                lambda: root(4999, tree.read)):
        tree.reads = 0
        ask()
        assert 0 < tree.reads <= 2 * 13 + 2  # log2(5000) < 13


def test_appending_in_batches_stores_the_same_hashes_as_appending_one_by_one():
    leaves = [leaf_hash(bytes([n])) for n in range(21)]
    one_by_one: dict = {}
    size, frontier = 0, []
    for leaf in leaves:
        size, frontier = append_leaves(frontier, size, [leaf], one_by_one.__setitem__)
    batched: dict = {}
    size2, frontier2 = append_leaves([], 0, leaves[:5], batched.__setitem__)
    size2, frontier2 = append_leaves(frontier2, size2, leaves[5:], batched.__setitem__)
    assert batched == one_by_one and (size2, frontier2) == (size, frontier) == (21, frontier)
    assert fold(frontier) == tree_hash(leaves) and len(one_by_one) == 21 + 10 + 5 + 2 + 1


def test_a_frontier_that_does_not_fit_the_size_is_refused():
    with pytest.raises(ValueError, match="frontier"):
        append_leaves([b"x" * 32], 3, [], lambda address, digest: None)


def test_tampered_proofs_are_refused_with_a_message_naming_what_is_wrong():
    tree = StoredTree(LEAF_INPUTS)
    good_root = root(7, tree.read)
    proof = inclusion_proof(2, 7, tree.read)
    verify_inclusion(2, 7, leaf_hash(LEAF_INPUTS[2]), proof, good_root)
    with pytest.raises(ProofError, match="inclusion proof for leaf 3 of 7: the proof gives"):
        verify_inclusion(3, 7, leaf_hash(LEAF_INPUTS[2]), proof, good_root)
    with pytest.raises(ProofError, match="has 2 hashes, not 3"):
        verify_inclusion(2, 7, leaf_hash(LEAF_INPUTS[2]), proof[:2], good_root)
    with pytest.raises(ProofError, match="hash 1 has 31 bytes"):
        root_from_inclusion_proof(2, 7, leaf_hash(LEAF_INPUTS[2]), [proof[0], proof[1][:31], proof[2]])
    with pytest.raises(ProofError, match="leaf index 7 is not in a tree of 7"):
        verify_inclusion(7, 7, leaf_hash(LEAF_INPUTS[2]), proof, good_root)
    old_root = root(3, tree.read)
    consistency = consistency_proof(3, 7, tree.read)
    with pytest.raises(ProofError, match="old tree"):
        verify_consistency(3, 7, consistency, root(2, tree.read), good_root)
    with pytest.raises(ProofError, match="new tree"):
        verify_consistency(3, 7, consistency, old_root, root(6, tree.read))
    with pytest.raises(ProofError, match="smaller than the old size"):
        verify_consistency(7, 3, consistency, old_root, good_root)
    with pytest.raises(ProofError, match="empty tree is meaningless"):
        verify_consistency(0, 7, [], EMPTY_ROOT, good_root)


def test_proofs_for_sizes_outside_the_tree_are_refused():
    tree = StoredTree(LEAF_INPUTS)
    with pytest.raises(ValueError, match="leaf index 8 is not in a tree of 8"):
        inclusion_proof(8, 8, tree.read)
    with pytest.raises(ValueError, match="from size 5 to size 4"):
        consistency_proof(5, 4, tree.read)
    assert consistency_proof(0, 8, tree.read) == [] and consistency_proof(8, 8, tree.read) == []


def test_roots_and_proofs_agree_with_pymerkle_a_second_implementation():
    leaves = [f"audit entry {n}".encode() for n in range(70)]
    theirs = pymerkle.InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        theirs.append_entry(leaf)
    ours = StoredTree(leaves)
    for size in range(1, 71):
        assert root(size, ours.read) == theirs.get_root(size)
        for index in range(0, size, 3):
            # pymerkle's path starts with the leaf's own hash and counts leaves from 1.
            their_path = theirs.prove_inclusion(index + 1, size).path
            assert their_path[0] == leaf_hash(leaves[index])
            assert inclusion_proof(index, size, ours.read) == list(their_path[1:])
        for old in range(1, size, 5):
            # pymerkle's consistency proofs are not in RFC 9162 form (it sends the leaves under a subtree
            # RFC 9162 sends whole), so they cannot be compared hash for hash: it must accept our roots.
            their_proof = theirs.prove_consistency(old, size)
            pymerkle.verify_consistency(root(old, ours.read), root(size, ours.read), their_proof)
