"""Proof documents checked offline: what a holder of a proof file and a trusted root can tell."""
from __future__ import annotations

import base64
import copy

import pytest

from audit.entries import canonical_json
from audit.merkle import ProofError, append_leaves, consistency_proof, fold, inclusion_proof, leaf_hash, subtree_addresses
from audit.proofs import (
    check_consistency,
    check_inclusion,
    consistency_document,
    inclusion_document,
    load_document,
    parse_tree_head,
)

ENTRIES = [{"seq": seq, "event": {"action": "chart.read", "patient_id": f"p{seq % 4}"}} for seq in range(1, 12)]


def _tree() -> dict:
    nodes: dict = {}
    append_leaves([], 0, [leaf_hash(canonical_json(entry)) for entry in ENTRIES], nodes.__setitem__)
    return nodes


NODES = _tree()


def _read(addresses):
    return [NODES[address] for address in addresses]


def _root(size: int) -> bytes:
    return fold(_read(subtree_addresses(0, size)))


def _inclusion(index: int = 6, size: int = 11) -> dict:
    return inclusion_document(size, index, _root(size), leaf_hash(canonical_json(ENTRIES[index])),
                              inclusion_proof(index, size, _read), copy.deepcopy(ENTRIES[index]))


def test_a_proof_of_an_entry_checks_against_the_trusted_tree_head():
    assert check_inclusion(_inclusion(), (11, _root(11))).startswith("entry seq 7 is in the tree of 11 entries with root ")
    assert check_inclusion(_inclusion(0, 1), (1, _root(1)))


@pytest.mark.parametrize(("change", "words"), [
    (lambda doc: doc["entry"]["event"].update(patient_id="someone-else"), "does not hash to leaf_hash"),
    (lambda doc: doc["entry"].update(seq=8), "seq 8 is not leaf_index \\+ 1 = 7"),
    (lambda doc: doc.update(leaf_index=7), "not leaf_index \\+ 1"),
    (lambda doc: doc["inclusion_path"].reverse(), "the proof gives"),
    (lambda doc: doc.update(tree_size=10), "tree_size 10 is not the trusted tree size 11"),
    (lambda doc: doc.update(root_hash=base64.b64encode(_root(10)).decode()), "root_hash is not the trusted root"),
])
def test_a_changed_inclusion_document_is_refused_naming_what_is_wrong(change, words):
    document = _inclusion()
    change(document)
    with pytest.raises(ProofError, match=words):
        check_inclusion(document, (11, _root(11)))


@pytest.mark.parametrize(("document", "words"), [
    ("[1]", "a proof document is a JSON object"),
    ("{", "not JSON"),
])
def test_unreadable_documents_are_unusable_input_not_tampering(document, words):
    with pytest.raises(ValueError, match=words) as raised:
        load_document(document)
    assert not isinstance(raised.value, ProofError)


@pytest.mark.parametrize(("change", "words"), [
    (lambda doc: doc.update(tree_size="11"), "tree_size must be a whole number"),
    (lambda doc: doc.update(leaf_hash="not base64!"), "leaf_hash is not base64"),
    (lambda doc: doc["inclusion_path"].__setitem__(1, "AAAA"), "inclusion_path\\[1\\] has 3 bytes, not 32"),
    (lambda doc: doc.update(inclusion_path="x"), "inclusion_path must be a list"),
])
def test_malformed_fields_are_named(change, words):
    document = _inclusion()
    change(document)
    with pytest.raises(ValueError, match=words) as raised:
        check_inclusion(document)
    assert not isinstance(raised.value, ProofError)


def test_a_consistency_document_proves_the_old_tree_is_a_prefix_of_the_new():
    document = consistency_document(5, 11, _root(5), _root(11), consistency_proof(5, 11, _read))
    assert "tree of 5 entries" in check_consistency(document, (5, _root(5)), (11, _root(11)))
    with pytest.raises(ProofError, match="root_hash_1 is not the trusted root"):
        check_consistency(document, (5, _root(4)), (11, _root(11)))
    with pytest.raises(ProofError, match="tree_size_2 11 is not the trusted tree size 12"):
        check_consistency(document, None, (12, _root(11)))
    forked = consistency_document(5, 11, _root(5), _root(10), consistency_proof(5, 11, _read))
    with pytest.raises(ProofError, match="new tree"):
        check_consistency(forked)


def test_a_size_changed_in_a_document_passes_only_without_a_trusted_head():
    """An inclusion path alone does not pin the tree size (leaf 6's path is the same in trees of 10 and 11):
    which is why the CLI warns unless a checkpoint's size and root are given."""
    document = _inclusion()
    document["tree_size"] = 10
    assert check_inclusion(document)
    with pytest.raises(ProofError, match="not the trusted tree size"):
        check_inclusion(document, (11, _root(11)))


def test_a_trusted_tree_head_is_written_size_colon_root():
    assert parse_tree_head(f"11:{base64.b64encode(_root(11)).decode()}", "--tree") == (11, _root(11))
    for text in ("11", "x:AAAA", f"-1:{base64.b64encode(_root(11)).decode()}", "11:AAAA"):
        with pytest.raises(ValueError, match="--tree"):
            parse_tree_head(text, "--tree")
