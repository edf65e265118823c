"""Verifying the Merkle tree a store keeps against its entries: in full, or from a trusted tree head.

Full (`trusted=None`): every entry is re-hashed into a leaf, the whole tree is re-derived from
the leaves, and every stored hash (leaves and interior nodes) is compared with the derived one;
the stored tree must hold exactly the entries, no more (a tail deleted from the entries but not
from the tree is a truncation).

Incremental (`trusted=TreeHead(size, root)`, e.g. the last checkpoint that was verified and
signed or witnessed): the stored frontier of `size` (O(log n) hashes) must fold to the trusted
root, only the entries after `size` are re-hashed and their new tree hashes compared, and the
consistency proof from the trusted head to the new one is checked as any outside verifier would.
Cost O(new + log n): nothing before `size` is read.

The target size is fixed when verification starts; entries appended meanwhile are left for the
next run. Problems are reported like audit.verify's (a Problem with a position, the seq of the
first entry concerned, and a kind), never raised.
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audit.entries import Entry
from audit.errors import MalformedEntryError, Problem, TreeError
from audit.merkle import Address, ProofError, append_leaves, fold, subtree_addresses, verify_consistency
from audit.store import AuditStore

PAGE = 2000


@dataclass(frozen=True)
class TreeHead:
    """A tree size and its RFC 9162 root, as a checkpoint states them."""

    size: int
    root: bytes


@dataclass
class TreeReport:
    ok: bool
    mode: str  # "full" or "incremental"
    head: TreeHead | None  # the head verified (trust it only when ok)
    entries_checked: int
    problem: Problem | None = None

    def summary(self) -> str:
        if self.ok and self.head is not None:
            root = base64.b64encode(self.head.root).decode("ascii")
            return f"OK: tree intact ({self.mode}, size {self.head.size}, root {root}, {self.entries_checked} entries hashed)"
        problem = self.problem
        return (f"FAILED: {problem.kind} at position {problem.position}: {problem.message} "
                f"({self.mode}, {self.entries_checked} entries hashed)")


class _Found(Exception):
    def __init__(self, position: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(position, kind, message)


class TreeChecker:
    """Feed it the entries after the start size, in order (`add`), then `finish`; records the first
    problem instead of raising, so a chain verifier can drive it from the same pass over the log."""

    def __init__(self, store: AuditStore, trusted: TreeHead | None = None) -> None:
        self.store, self.trusted = store, trusted
        self.mode = "full" if trusted is None else "incremental"
        self.start = self.size = 0 if trusted is None else trusted.size
        self.checked = 0
        self.problem: Problem | None = None
        self._frontier: list[bytes] = []
        self._page: list[Entry] = []
        self._guard(self._open)

    def _guard(self, step: Callable[[], None]) -> None:
        if self.problem is not None:
            return
        try:
            step()
        except _Found as found:
            self.problem = found.problem
        except ProofError as exc:
            self.problem = Problem(self.start + 1, "inconsistent", str(exc))
        except TreeError as exc:
            self.problem = Problem(self.start + self.checked + 1, "tree_mismatch", str(exc))
        except MalformedEntryError as exc:
            self.problem = Problem(exc.position, "malformed", exc.message)

    def _open(self) -> None:
        head_seq = self.store.head_seq()
        self.size = self.store.tree_size()  # read after the head: appends commit entries and hashes together
        if self.size < self.start:
            raise _Found(self.size + 1, "truncated", f"the tree has {self.size} leaves, fewer than the trusted {self.start}")
        if self.size < head_seq:
            raise _Found(self.size + 1, "tree_mismatch", f"entries {self.size + 1} to {head_seq} have no leaf in the tree")
        self._frontier = self.store.stored_hashes(subtree_addresses(0, self.start))
        if self.trusted is not None and fold(self._frontier) != self.trusted.root:
            raise _Found(max(self.start, 1), "inconsistent",
                         f"the stored tree of the first {self.start} entries does not have the trusted root")

    def add(self, entry: Entry) -> None:
        if self.problem is None and self.start < entry.seq <= self.size:
            self._page.append(entry)
            if len(self._page) >= PAGE:
                self._guard(self._flush)

    def _flush(self) -> None:
        """Re-derive the hashes the page's entries complete and compare them with the stored ones."""
        page, self._page = self._page, []
        done = self.start + self.checked
        for offset, entry in enumerate(page):
            if entry.seq != done + offset + 1:
                raise _Found(done + offset + 1, "deleted", f"entry {done + offset + 1} is missing (next is {entry.seq})")
        derived: dict[Address, bytes] = {}
        _, self._frontier = append_leaves(self._frontier, done, (entry.leaf_hash() for entry in page),
                                          derived.__setitem__)
        addresses = list(derived)
        stored = self.store.stored_hashes(addresses)
        wrong = [address for address, digest in zip(addresses, stored, strict=True) if derived[address] != digest]
        if wrong:
            level, index = min(wrong)  # the lowest level names the fewest entries
            first = index << level
            what = f"entry {first + 1}" if level == 0 else f"entries {first + 1} to {first + (1 << level)}"
            raise _Found(first + 1, "tree_mismatch",
                         f"the stored tree hash at level {level}, index {index} is not the hash of {what}")
        self.checked += len(page)

    def _close(self) -> None:
        end = self.start + self.checked
        if end != self.size:
            raise _Found(end + 1, "truncated", f"the tree has {self.size} leaves but the log ends at entry {end}")
        if self.trusted is not None and 0 < self.start < self.size:
            proof = self.store.consistency_proof(self.start, self.size)
            verify_consistency(self.start, self.size, proof, self.trusted.root, fold(self._frontier))

    def finish(self) -> TreeReport:
        self._guard(self._flush)
        self._guard(self._close)
        if self.problem is not None:
            return TreeReport(False, self.mode, None, self.checked, self.problem)
        return TreeReport(True, self.mode, TreeHead(self.size, fold(self._frontier)), self.checked)


def verify_tree(
    store: AuditStore,
    trusted: TreeHead | None = None,
    progress: Callable[[int], Any] | None = None,
) -> TreeReport:
    """Check the store's tree against its entries (see the module docstring); never raises on tampering."""
    checker = TreeChecker(store, trusted)
    count = 0
    if checker.problem is None:
        for entry in store.iter_entries(after_seq=checker.start):
            if entry.seq > checker.size or checker.problem is not None:
                break
            checker.add(entry)
            count += 1
            if progress is not None and count % PAGE == 0:
                progress(PAGE)
    if progress is not None:
        progress(count % PAGE)
    return checker.finish()
