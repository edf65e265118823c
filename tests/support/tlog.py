"""A small in-memory transparency log for tests: RFC 9162 tree (audit.merkle), signed checkpoints, proofs.

It is what a witness sees of the portal's log, without a database: the witness and its client
are tested against it, and a test can fork or roll it back at will.
"""
from __future__ import annotations

from audit.entries import SigningKey
from audit.merkle import Address, append_leaves, consistency_proof, fold, leaf_hash, subtree_addresses
from audit.note import Checkpoint, NoteSigner, Verifier


class MemoryLog:
    """A log of `origin` signed by a fresh Ed25519 key named after its origin."""

    def __init__(self, origin: str = "portal.example/audit", signer: NoteSigner | None = None) -> None:
        self.origin = origin
        self.signer = signer or NoteSigner(origin, SigningKey.generate())
        self._hashes: dict[Address, bytes] = {}
        self._frontier: list[bytes] = []
        self.size = 0

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    def append(self, count: int, tag: str = "entry") -> None:
        leaves = [leaf_hash(f"{tag} {self.size + i}".encode()) for i in range(count)]
        self.size, self._frontier = append_leaves(self._frontier, self.size, leaves, self._hashes.__setitem__)

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return fold([self._hashes[address] for address in subtree_addresses(0, size)])

    def checkpoint(self, size: int | None = None) -> str:
        """The signed checkpoint note at `size` (default: now)."""
        size = self.size if size is None else size
        return Checkpoint(self.origin, size, self.root(size)).sign(self.signer)

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.size if new is None else new
        return consistency_proof(old, new, lambda addresses: [self._hashes[a] for a in addresses])
