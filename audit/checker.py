"""The one checking pass every verifier runs: entries in order, re-derived into the RFC 9162 tree, held
to the log's signed tree checkpoints.

A source (the SQL store, a JSONL store file or export, a CSV or FHIR export) hands over `Leaf` items
in log order: where the item is (a seq for stores, a line number for files), its seq, the leaf hash
derived from its content, the leaf hash it claims (the stored leaf of the tree for the SQL store, the
record's `leaf_hash` in files: None when it claims none) and what rebuilds its entry. The pass checks,
in constant memory:

* that seqs run 1, 2, 3... (or only increase, for a filtered export): a gap is a deleted entry, a
  repeated seq an inserted one, a smaller seq a reordering;
* that each entry's content has the leaf hash it claims (an edit; or a move, when it has the hash it
  would have one seq away);
* with `tree` (a contiguous log): the tree of the entries, whose hashes the SQL store compares with
  every stored node (`StoredTree`), and the roots at the sizes of the signed tree checkpoints: each
  checkpoint's Ed25519 signature (the log's key, under the log's origin as key name) and that its root
  is the root of the entries up to its size; that the log reaches the size of every checkpoint (a
  truncated tail); and that a checkpoint exists at every multiple of the writer's `checkpoint_every`
  (`required_every`) up to `required_through`, as the writer signs them, so deleting the checkpoints
  and re-hashing a rewritten log is caught.

The first problem, by position, is reported (a Problem with a kind from KINDS); nothing is raised
for bad input. A page of items with nothing to report is taken whole (the common case, and the one
full verification's speed depends on); from the first page that has something, items are checked one
by one with a look-ahead that tells an edit from a move, a gap from a reordering.

Long because the pass is one piece: the entry checks, the tree's growth and the checkpoints it reaches
decide together which problem comes first, and splitting them would split that decision.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import chain
from typing import Any, NamedTuple

from audit.entries import Entry, VerifyKey
from audit.errors import MalformedEntryError, Problem, TreeError
from audit.merkle import EMPTY_ROOT, NODE_PREFIX, node_hash
from audit.note import ALG_ED25519, NoteError, Verifier, open_note
from audit.note import Checkpoint as NoteCheckpoint
from audit.tree_checkpoints import note_body

KINDS = frozenset({
    "edited", "deleted", "inserted", "reordered", "truncated",
    "bad_checkpoint_signature", "checkpoint_mismatch", "checkpoint_missing", "malformed",
    "tree_mismatch", "inconsistent",
})
BATCH = 2000


class Leaf(NamedTuple):
    position: int
    seq: int
    leaf: bytes
    claimed: bytes | None
    source: Any  # what `entry_of` rebuilds the entry from


class Found(Exception):
    """Raised inside the pass (and by sources) to report a problem at a position."""

    def __init__(self, position: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(position, kind, message)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A tree checkpoint as a source holds it: where it is, its signed note, and the size and root the source
    states beside the note (the SQL row's columns; None when the note is all there is)."""

    position: int
    note: str
    size: int | None = None
    root: bytes | None = None


class StoredTree:
    """The stored hashes the derived tree is compared with (the SQL store's node table)."""

    def __init__(self, size: int, read: Callable[[int, int], list[tuple[int, int, bytes]]]) -> None:
        self.size = size  # leaves stored
        self.read = read  # read(start, end): (level, index, hash) of the stored nodes above leaves start..end-1
        # that those leaves complete (levels 1 and up), ordered by level, then index


@dataclass
class Outcome:
    problem: Problem | None
    entries: int
    checkpoints: int
    key_id: str | None
    size: int
    root: bytes


class _Checkpoints:
    """The signed checkpoints, checked as the pass reaches their sizes (in size order: each checkpoint states
    its own size and root, so the order they were written in proves nothing; a migrated log's checkpoints of
    its old chain's heads come after newer ones)."""

    def __init__(self, checkpoints: Sequence[SignedCheckpoint], key: VerifyKey | None,
                 required_every: int | None, required_through: int | None, seq_positions: bool) -> None:
        self._all = sorted(((self._size(checkpoint), checkpoint) for checkpoint in checkpoints), key=lambda pair: pair[0])
        self._next = 0
        self.key = key
        self.required_every = required_every
        self.required_through = required_through
        self.seq_positions = seq_positions
        self.checked = 0
        self._verifier: Verifier | None = None
        self._signed_sizes: set[int] = set()
        self.failed_at: int | None = None  # size of a checkpoint that failed: the rule below is not applied beyond
        self.sizes = {size for size, _ in self._all}

    @staticmethod
    def _size(checkpoint: SignedCheckpoint) -> int:
        if checkpoint.size is not None:
            return checkpoint.size
        try:
            return note_body(checkpoint.note).size
        except NoteError:
            return 0  # unreadable: checked (and refused) first thing

    def _open(self, size: int, checkpoint: SignedCheckpoint) -> NoteCheckpoint:
        """Verify the signature of one checkpoint (of `size` as far as it was read); what it states."""
        position = checkpoint.position
        try:
            body = note_body(checkpoint.note) if self._verifier is None else None  # the origin names the key
        except NoteError as exc:
            raise Found(position, "bad_checkpoint_signature", f"unreadable tree checkpoint: {exc}") from None
        if self.key is None:
            raise Found(position, "bad_checkpoint_signature", "no public key to check the tree checkpoints with")
        if self._verifier is None:
            self._verifier = Verifier(body.origin, ALG_ED25519, self.key.raw)
        try:
            body = NoteCheckpoint.parse(open_note(checkpoint.note, [self._verifier]).text)
        except NoteError as exc:
            raise Found(position, "bad_checkpoint_signature",
                        f"tree checkpoint of size {size} is not signed by the log's key as "
                        f"{self._verifier.name}: {exc}") from None
        if (checkpoint.size, checkpoint.root) not in ((None, None), (body.size, body.root_hash)):
            raise Found(position, "checkpoint_mismatch",
                        f"tree checkpoint of size {body.size}: the stored size and root differ from its signed note")
        self.checked += 1
        return body

    def reached(self, size: int, root_at: Callable[[int], bytes | None]) -> None:
        """Check every checkpoint of a size up to `size` (the tree just grew to it), then the required ones."""
        while self._next < len(self._all) and self._all[self._next][0] <= size:
            self.failed_at, checkpoint = self._all[self._next]
            body = self._open(self.failed_at, checkpoint)
            checkpoint_size = body.size
            if body.root_hash != root_at(checkpoint_size):
                raise Found(checkpoint.position, "checkpoint_mismatch",
                            f"tree checkpoint of size {checkpoint_size} signs a different root than the tree of the "
                            f"first {checkpoint_size} entries (rewritten, reordered or forked)")
            self._signed_sizes.add(checkpoint_size)
            self._next += 1
        self.failed_at = None

    def require(self, start: int, end: int, position_of: Callable[[int], int]) -> None:
        """Every multiple of required_every in (start, end], up to required_through, has a verified checkpoint."""
        every = self.required_every
        if every is None:
            return
        through = end if self.required_through is None else min(end, self.required_through)
        if self.failed_at is not None:
            through = min(through, self.failed_at - 1)
        for size in range((start // every + 1) * every, through + 1, every):
            if size not in self._signed_sizes:
                raise Found(position_of(size), "checkpoint_missing", f"checkpoint missing at seq {size}")

    def finish(self, last_seq: int, end_position: int) -> None:
        if self._next < len(self._all):
            size, checkpoint = self._all[self._next]
            raise Found(end_position, "truncated",
                        f"log ends at seq {last_seq} but a tree checkpoint (position {checkpoint.position}) "
                        f"signed {size} entries")


@dataclass
class Pass:
    """One verification pass; `run` it over the items. `tree=False` checks entries one by one only."""

    entry_of: Callable[[Any], Entry]
    checkpoints: Sequence[SignedCheckpoint] = ()
    key: VerifyKey | None = None
    tree: bool = True
    seq_positions: bool = True
    required_every: int | None = None
    required_through: int | None = None
    stored: StoredTree | None = None
    observe: Callable[[Leaf], Any] | None = None
    progress: Callable[[int], Any] | None = None
    roots_at: frozenset[int] = frozenset()  # sizes whose roots to keep in `roots` (e.g. a witness's checkpoint's)
    roots: dict[int, bytes] = field(default_factory=dict)
    _stack: list[bytes] = field(default_factory=list)
    _size: int = 0
    _count: int = 0
    _prev: Leaf | None = None

    def run(self, pages: Iterable[list[Leaf]]) -> Outcome:
        """Check the items, given in pages (lists) in log order. A page without anything to report is taken whole;
        from the first page that has something, items are checked one by one with a look-ahead, which names it."""
        cursor = _Checkpoints(self.checkpoints, self.key, self.required_every, self.required_through,
                              self.seq_positions)
        self._count, problem = 0, None
        pages = iter(pages)
        try:
            cursor.reached(0, lambda size: EMPTY_ROOT)
            while problem is None:
                page, problem = _pull(pages)
                if page is None:
                    break
                if not self._clean(page):
                    problem = self._one_by_one(_Peekable(chain(page, chain.from_iterable(pages))), cursor)
                    break
                problem = self._take(page, cursor)
            if problem is None and self.tree:
                problem = self._finish(cursor)
        except Found as found:
            problem = _first(problem, found.problem)
        return Outcome(problem, self._count, cursor.checked, cursor.key.key_id if cursor.key else None, self._size,
                       self._root())

    def _clean(self, page: list[Leaf]) -> bool:
        """Seqs in order (consecutive, for a tree) and every claimed leaf hash the derived one: nothing to report."""
        last = self._prev.seq if self._prev is not None else 0
        stored, tree = self.stored is not None, self.tree
        for item in page:
            if item.seq != last + 1 if tree else item.seq <= last:
                return False
            claimed = item.claimed
            if (claimed is None and stored) or (claimed is not None and claimed != item.leaf):
                return False
            last = item.seq
        return True

    def _take(self, batch: list[Leaf], cursor: _Checkpoints, problem: Problem | None = None) -> Problem | None:
        """Accept checked items: observed, counted, grown into the tree."""
        if self.observe is not None:
            for item in batch:
                self.observe(item)
        if batch:
            self._prev = batch[-1]
            self._count += len(batch)
            if self.tree:
                problem = _first(problem, self._grow(batch, cursor))
        if self.progress is not None:
            self.progress(len(batch))
        return problem

    def _one_by_one(self, stream: _Peekable, cursor: _Checkpoints) -> Problem | None:
        while True:
            batch, problem = self._batch(stream)
            problem = self._take(batch, cursor, problem)
            if problem is not None or stream.peek() is None:
                return problem or stream.error()

    def _root(self) -> bytes:
        result = self._stack[-1] if self._stack else EMPTY_ROOT
        for left in reversed(self._stack[:-1]):
            result = node_hash(left, result)
        return result

    def _batch(self, stream: _Peekable) -> tuple[list[Leaf], Problem | None]:
        """Up to BATCH items that pass the entry checks, and the problem that ended the batch early."""
        batch: list[Leaf] = []
        try:
            while len(batch) < BATCH and (item := stream.pop()) is not None:
                self._check(item, stream, batch[-1] if batch else self._prev)
                batch.append(item)
        except Found as found:
            return batch, found.problem
        except MalformedEntryError as exc:
            return batch, Problem(exc.position, "malformed", exc.message)
        return batch, None

    def _check(self, item: Leaf, stream: _Peekable, prev: Leaf | None) -> None:
        seq, position = item.seq, item.position
        following = stream.peek()
        if following is not None and following.seq == seq:
            raise Found(position, "inserted",
                        f"two entries with seq {seq} (positions {position} and {following.position})")
        if prev is not None and seq == prev.seq:
            raise Found(position, "inserted", f"second entry with seq {seq}")
        if prev is not None and seq < prev.seq:
            raise Found(position, "reordered", f"seq {seq} follows seq {prev.seq}")
        expected = prev.seq + 1 if prev is not None else 1
        if self.tree and seq > expected:
            if following is not None and following.seq < seq:
                raise Found(position, "reordered", f"seq {seq} comes before seq {following.seq}")
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            raise Found(expected if self.seq_positions else position, "deleted",
                        f"seq {missing} missing before seq {seq}")
        if item.claimed is None and self.stored is not None:
            raise Found(position, "inserted", f"entry {seq} has no leaf in the tree")
        if item.claimed is not None and item.claimed != item.leaf:
            self._mismatch(item, prev, following)

    def _mismatch(self, item: Leaf, prev: Leaf | None, following: Leaf | None) -> None:
        entry = self.entry_of(item.source)
        neighbours = {other.seq: other.claimed for other in (prev, following) if other is not None}
        for moved in (item.seq + 1, item.seq - 1):
            if moved >= 1 and entry.leaf_hash(moved) in (item.claimed, neighbours.get(moved)):
                raise Found(item.position, "reordered", f"entry stored at seq {item.seq} was written as seq {moved}")
        raise Found(item.position, "edited", f"seq {item.seq}: content does not match its leaf hash")

    def _grow(self, batch: list[Leaf], cursor: _Checkpoints) -> Problem | None:
        """Add the batch's leaves to the tree; compare the stored nodes they complete; check checkpoints."""
        start, stack, sizes = self._size, self._stack, cursor.sizes | self.roots_at
        roots: dict[int, bytes] = {}
        derived: list[list[bytes]] = [[] for _ in range((start + len(batch)).bit_length() + 1)]  # per level
        size = start
        for item in batch:
            digest, index, level = item.leaf, size, 0
            while index & 1:
                digest = sha256(NODE_PREFIX + stack.pop() + digest).digest()  # node_hash, inlined: it runs n times
                level, index = level + 1, index >> 1
                derived[level].append(digest)
            stack.append(digest)
            size += 1
            if size in sizes:
                self._size = size
                roots[size] = self._root()
        self._size = size
        self.roots.update((wanted, roots[wanted]) for wanted in self.roots_at if wanted in roots)
        positions = {item.seq: item.position for item in batch}
        problems = [self._compare(start, size, derived)]
        try:
            cursor.reached(size, roots.get)
        except Found as found:
            problems.append(found.problem)
        try:
            cursor.require(start, size, lambda seq: seq if self.seq_positions else positions[seq])
        except Found as found:
            problems.append(found.problem)
        return _first(*problems)

    def _compare(self, start: int, end: int, derived: list[list[bytes]]) -> Problem | None:
        """The stored nodes the batch completes against the derived ones: the node hashes the batch completed
        at each level are those of consecutive indexes from start >> level, so both sides line up in order."""
        if self.stored is None:
            return None
        rows = self.stored.read(start, end)
        if [row[2] for row in rows] == list(chain.from_iterable(derived)):
            return None  # the same hashes in the same (level, index) order: the ranges read hold no others
        expected = [(level, (start >> level) + n, digest) for level, digests in enumerate(derived)
                    for n, digest in enumerate(digests)]
        stored = {(level, index): digest for level, index, digest in rows}
        wrong = [(level, index) for level, index, digest in expected if stored.get((level, index)) != digest]
        wrong += [address for address in stored if address not in {(level, index) for level, index, _ in expected}]
        level, index = min(wrong)
        first = index << level
        if (level, index) not in stored:
            return Problem(first + 1, "tree_mismatch", f"the tree has no stored hash at level {level}, index {index}")
        return Problem(first + 1, "tree_mismatch", f"the stored tree hash at level {level}, index {index} is not the "
                                                   f"hash of entries {first + 1} to {first + (1 << level)}")

    def _finish(self, cursor: _Checkpoints) -> Problem | None:
        last = self._prev.seq if self._prev else 0
        end = last + 1 if self.seq_positions else (self._prev.position + 1 if self._prev else 1)
        try:
            cursor.finish(last, end)
        except Found as found:
            return found.problem
        if self.stored is not None and self.stored.size > last:
            return Problem(last + 1, "truncated", f"the tree has {self.stored.size} leaves but the log ends at entry "
                                                  f"{last}")
        return None


_SOURCE_ERRORS = (MalformedEntryError, Found, TreeError)


def _problem_of(exc: Exception) -> Problem:
    """What a source's error (one of _SOURCE_ERRORS) reports."""
    if isinstance(exc, MalformedEntryError):
        return Problem(exc.position, "malformed", exc.message)
    if isinstance(exc, Found):
        return exc.problem
    return Problem(0, "tree_mismatch", str(exc))


def _pull(pages: Iterator[list[Leaf]]) -> tuple[list[Leaf] | None, Problem | None]:
    """The next page, or (None, the problem a source raised) or (None, None) at the end."""
    try:
        return next(pages, None), None
    except _SOURCE_ERRORS as exc:
        return None, _problem_of(exc)


def pages_of(items: Iterable[Leaf], size: int = BATCH) -> Iterator[list[Leaf]]:
    """Items in pages; what a source raises comes after the page of the items before it."""
    page: list[Leaf] = []
    try:
        for item in items:
            page.append(item)
            if len(page) == size:
                yield page
                page = []
    except _SOURCE_ERRORS:
        if page:
            yield page
        raise
    if page:
        yield page


def _first(*problems: Problem | None) -> Problem | None:
    """The problem at the smallest position (the earliest found on a tie)."""
    found = [problem for problem in problems if problem is not None]
    return min(found, key=lambda problem: problem.position) if found else None


class _Peekable:
    """Items with one-item look-ahead; a source's error (MalformedEntryError, Found) surfaces once reached."""

    def __init__(self, items: Iterable[Leaf]) -> None:
        self._items: Iterator[Leaf] = iter(items)
        self._next: Leaf | None = None
        self._error: Problem | None = None

    def peek(self) -> Leaf | None:
        if self._next is None and self._error is None:
            try:
                self._next = next(self._items)
            except StopIteration:
                pass
            except _SOURCE_ERRORS as exc:
                self._error = _problem_of(exc)
        return self._next

    def pop(self) -> Leaf | None:
        item = self.peek()
        if item is None and self._error is not None:
            raise Found(self._error.position, self._error.kind, str(self._error.message))
        self._next = None
        return item

    def error(self) -> Problem | None:
        return self._error
