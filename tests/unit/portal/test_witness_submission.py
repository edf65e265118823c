"""The portal's witness submission rounds (portal/witnessing.py) with a fake witness and a fake clock.

The real witness, over HTTP, is in tests/integration/portal/test_audit_witnessing_portal.py; here the
decisions: what is submitted, from which old size, what is kept, and how long to back off.
"""
from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from audit import AuditEvent, SigningKey, SqlAuditStore, create_tables
from audit.merkle import verify_consistency
from audit.note import ALG_COSIGNATURE_V1, NoteSigner, Verifier, open_checkpoint
from audit.witness_client import Cosigned, WitnessConflict, WitnessUnreachable
from portal.observability import WITNESS_FAILURES
from portal.witnessing import Submitter

LOG_KEY = SigningKey.generate()
WITNESS = NoteSigner("witness.test/w1", SigningKey.generate(), ALG_COSIGNATURE_V1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeWitness:
    """Cosigns what it is sent after checking the old size and the proof, like the real one; can be 'down'."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.size, self.root, self.down = clock, 0, None, False
        self.requests: list[tuple[int, int]] = []

    def __call__(self, url: str, note: str, old: int, proof: Sequence[bytes], witness: Verifier) -> Cosigned:
        if self.down:
            raise WitnessUnreachable("connection refused")
        checkpoint, parsed = open_checkpoint(note, [Verifier.from_vkey(LOG_VKEY)])
        self.requests.append((old, checkpoint.size))
        if old != self.size:
            raise WitnessConflict(self.size)
        if 0 < old < checkpoint.size:
            verify_consistency(old, checkpoint.size, proof, self.root, checkpoint.root_hash)
        self.size, self.root = checkpoint.size, checkpoint.root_hash
        cosignature = WITNESS.sign(parsed.text, int(self.clock()))
        return Cosigned(checkpoint, cosignature, int(self.clock()), parsed.with_signatures([cosignature]).encode())


LOG_VKEY = NoteSigner("portal.test/audit", LOG_KEY).vkey()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock) -> SqlAuditStore:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    create_tables(engine)
    return SqlAuditStore(engine, LOG_KEY, origin="portal.test/audit", checkpoint_seconds=60, clock=clock)


def _append(store: SqlAuditStore, count: int) -> None:
    for _ in range(count):
        store.append(AuditEvent(action="chart.read", outcome="allowed"))


def test_the_newest_checkpoint_is_cosigned_with_a_proof_from_the_last_cosigned_size_and_kept(store, clock):
    witness = FakeWitness(clock)
    submitter = Submitter(store, "http://witness.test", WITNESS.verifier, post=witness, clock=clock)
    _append(store, 3)
    assert submitter.submit().cosigned == 1  # the first append's checkpoint
    clock.now += 61
    _append(store, 5)  # the first of these is signed into a checkpoint of 4 entries
    assert submitter.submit().cosigned == 4
    assert witness.requests == [(0, 1), (1, 4)]
    kept = store.latest_cosignature(WITNESS.verifier.key())
    assert kept.tree_size == 4
    open_checkpoint(kept.note, [Verifier.from_vkey(LOG_VKEY), WITNESS.verifier])
    assert submitter.submit().cosigned == 4 and len(witness.requests) == 2  # nothing new signed: nothing sent


def test_an_idle_tail_gets_its_own_checkpoint_once_checkpoint_seconds_have_passed(store, clock):
    witness = FakeWitness(clock)
    submitter = Submitter(store, "http://witness.test", WITNESS.verifier, post=witness, clock=clock)
    _append(store, 4)
    assert submitter.submit().cosigned == 1
    clock.now += 60
    assert submitter.submit().cosigned == 4


def test_a_conflict_resubmits_from_the_size_the_witness_reports(store, clock):
    witness = FakeWitness(clock)
    submitter = Submitter(store, "http://witness.test", WITNESS.verifier, post=witness, clock=clock)
    _append(store, 6)
    store.sign_tree_checkpoint()
    witness.size, witness.root = 6, store.root(6)  # another worker had it cosigned; this one stored nothing
    assert submitter.submit().cosigned == 6
    assert witness.requests == [(0, 6), (6, 6)]


def test_a_witness_that_remembers_more_than_the_log_holds_reports_truncation(store, clock):
    witness = FakeWitness(clock)
    witness.size = 50
    submitter = Submitter(store, "http://witness.test", WITNESS.verifier, post=witness, clock=clock)
    _append(store, 6)
    outcome = submitter.submit()
    assert outcome.truncated and "the witness cosigned 50 entries" in outcome.error


def test_an_unreachable_witness_is_counted_backed_off_and_retried_and_the_lag_grows(store, clock):
    witness = FakeWitness(clock)
    submitter = Submitter(store, "http://witness.test", WITNESS.verifier, post=witness, clock=clock)
    _append(store, 2)
    assert submitter.submit().ok
    witness.down = True
    clock.now += 61
    _append(store, 1)
    before = WITNESS_FAILURES._value.get()
    delays = []
    for _ in range(8):
        assert not submitter.submit().ok
        delays.append(submitter.next_delay(5))
    assert WITNESS_FAILURES._value.get() == before + 8
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    clock.now += 30
    assert store.unwitnessed_seconds(WITNESS.verifier.key()) == 30
    witness.down = False
    assert submitter.submit().cosigned == 3
    assert submitter.next_delay(5) == 5 and store.unwitnessed_seconds(WITNESS.verifier.key()) == 0
