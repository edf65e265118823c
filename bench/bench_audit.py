"""Cost of the tamper-evident audit log: SqlAuditStore appends vs plain INSERTs, and verify speed: full
verification (every entry re-hashed, the whole Merkle tree re-derived and compared, every signed tree
checkpoint checked) against a bare canonical-JSON + SHA-256 loop over the same entries measured in the same
run, incremental verification of the Merkle tree, and incremental verification of 1000 new entries on logs
of 10^4, 10^5 (and 10^6) entries against a full one.

    .venv/bin/python bench/bench_audit.py [--db URL] [--events N] [--verify-events N]

Both append paths insert the same rows one transaction per event, so the ratio is the price
of the serialising lock, the head read, hashing and periodic checkpoint signing.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import (  # noqa: E402
    AuditEvent,
    SigningKey,
    SqlAuditStore,
    audit_entry,
    create_tables,
    export_csv,
    export_jsonl,
    metadata,
    verify_store,
)
from audit.entries import canonical_json  # noqa: E402
from audit.incremental import VerifiedHead, anchor_after_full, verify_since  # noqa: E402
from audit.store import entry_to_row  # noqa: E402
from audit.tree_verify import TreeHead, verify_tree  # noqa: E402


def _events(count: int) -> list[AuditEvent]:
    return [AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 50}", patient_id=f"p{i % 500}",
                       source_ip="10.0.0.1", request_id=f"req-{i}", details={"results": i % 20})
            for i in range(count)]


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
    return engine


def _reset(engine: sa.Engine) -> None:
    metadata.drop_all(engine)
    create_tables(engine)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def bench_store(engine: sa.Engine, key: SigningKey, events: list[AuditEvent]) -> tuple[float, SqlAuditStore]:
    _reset(engine)
    store = SqlAuditStore(engine, key)
    started = time.perf_counter()
    for event in events:
        store.append(event)
    return _rate(len(events), time.perf_counter() - started), store


def bench_plain(engine: sa.Engine, rows: list[dict]) -> float:
    """The same rows (hashes precomputed) through one plain INSERT transaction each."""
    _reset(engine)
    started = time.perf_counter()
    for row in rows:
        with engine.begin() as conn:
            conn.execute(audit_entry.insert(), row)
    return _rate(len(rows), time.perf_counter() - started)


def bench_verify(store: SqlAuditStore, key: SigningKey) -> float:
    started = time.perf_counter()
    report = verify_store(store, key.verify_key)
    if not report.ok:
        raise SystemExit(f"verification failed: {report.summary()}")
    return _rate(report.entries_checked, time.perf_counter() - started)


def _bare_loop(leaves: list[dict]) -> float:
    """Seconds for canonical JSON + SHA-256 of every leaf, already in memory: the floor any verifier pays."""
    started = time.perf_counter()
    for leaf in leaves:
        hashlib.sha256(b"\x00" + canonical_json(leaf)).digest()
    return time.perf_counter() - started


def _full_verification(store: SqlAuditStore, key: SigningKey) -> float:
    started = time.perf_counter()
    report = verify_store(store, key.verify_key)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"verification failed: {report.summary()}")
    return seconds


def bench_full_verification(engine: sa.Engine, key: SigningKey, count: int, rounds: int = 5) -> tuple[float, float]:
    """Full verification of a log of `count` entries (appended 1000 at a time) against the bare loop over the
    same entries, in alternating rounds of the same run (medians): returns (bare/s, full/s)."""
    _reset(engine)
    store = SqlAuditStore(engine, key)
    events = _events(count)
    for start in range(0, count, 1000):
        store.append_many(events[start:start + 1000])
    leaves = [{"seq": entry.seq, "event": entry.event.to_dict()} for entry in store.iter_entries()]
    bare, full = [], []
    for _ in range(rounds):
        bare.append(_bare_loop(leaves))
        full.append(_full_verification(store, key))
    return _rate(count, statistics.median(bare)), _rate(count, statistics.median(full))


def bench_incremental(store: SqlAuditStore, events: list[AuditEvent]) -> tuple[float, int]:
    """Incremental Merkle tree verification of 1% new entries on top of a verified head: (seconds, new entries)."""
    head = verify_tree(store).head
    new = max(1, store.count() // 100)
    store.append_many(events[:new])
    started = time.perf_counter()
    incremental = verify_tree(store, TreeHead(head.size, head.root))
    seconds = time.perf_counter() - started
    if not incremental.ok or incremental.entries_checked != new:
        raise SystemExit(f"incremental verification failed: {incremental.summary()}")
    return seconds, new


INCREMENTAL_NEW = 1000
INCREMENTAL_SIZES = (10_000, 100_000)
INCREMENTAL_REPEATS = 5
MILLION = 1_000_000
MILLION_BUDGET_SECONDS = 60.0


def _grown_store(engine: sa.Engine, key: SigningKey, size: int) -> tuple[SqlAuditStore, float]:
    """A log of `size` entries appended in batches of 1000 (one transaction each), and how long that took."""
    _reset(engine)
    store = SqlAuditStore(engine, key, checkpoint_every=1000, origin="bench.example/audit")
    started = time.perf_counter()
    for start in range(0, size, 1000):
        store.append_many(_events(min(1000, size - start)))
    return store, time.perf_counter() - started


def _incremental_at(store: SqlAuditStore, new: int) -> tuple[float, float, int]:
    """Full tree verification of the whole log (the baseline), then `new` entries appended and verified
    incrementally from the checkpoint the full run recorded, as `flask audit-verify` does: checkpoint
    signatures, the consistency proof, the new entries' hashes and tree nodes, the row check. Seconds of
    each (the incremental run's fastest of INCREMENTAL_REPEATS), and the entries it hashed."""
    log = store.tree_signer().verifier
    store.sign_tree_checkpoint()
    started = time.perf_counter()
    full = verify_tree(store)
    full_seconds = time.perf_counter() - started
    anchor = anchor_after_full(store, log, full.head) if full.ok else None
    if not isinstance(anchor, VerifiedHead):
        raise SystemExit(f"full verification failed: {full.summary()} ({anchor})")
    store.append_many(_events(new))
    store.sign_tree_checkpoint()
    timings = []
    for _ in range(INCREMENTAL_REPEATS):  # read-only and cheap: the fastest of a few runs, as the machine is shared
        started = time.perf_counter()
        incremental = verify_since(store, log, anchor)
        timings.append(time.perf_counter() - started)
        if not incremental.ok:
            raise SystemExit(f"incremental verification failed: {incremental.problem}")
    return full_seconds, min(timings), incremental.entries_checked


def bench_incremental_growth(engine_for: Callable[[int], sa.Engine], key: SigningKey, new: int) -> list[str]:
    """Incremental verification of a fixed number of new entries on logs of growing size, against a full
    verification of the same log in the same run: O(new + log n) against O(n). 10^6 entries only when the
    10^5 run projects building and fully verifying them within MILLION_BUDGET_SECONDS."""
    lines, base = [], None
    sizes = list(INCREMENTAL_SIZES)
    while sizes:
        size = sizes.pop(0)
        engine = engine_for(size)
        store, build_seconds = _grown_store(engine, key, size)
        full, incremental, hashed = _incremental_at(store, new)
        engine.dispose()
        base = base or incremental
        lines.append(f"  {size:>9} entries  full {full * 1000:9.1f} ms  incremental ({hashed} new) "
                     f"{incremental * 1000:7.1f} ms  ({incremental / full:.4f}x full, {incremental / base:.2f}x the "
                     f"{INCREMENTAL_SIZES[0]}-entry incremental run)")
        if size == INCREMENTAL_SIZES[-1]:
            projected = (build_seconds + full) * MILLION / size
            if projected <= MILLION_BUDGET_SECONDS:
                sizes.append(MILLION)
            else:
                lines.append(f"  {MILLION:>9} entries  skipped: building and verifying it would take about "
                             f"{projected:.0f} s here")
    return lines


def export_peak_bytes(store: SqlAuditStore, key: SigningKey) -> int:
    """Peak memory allocated while streaming a JSON Lines and a CSV export of the whole store."""
    tracemalloc.start()
    for chunk in export_jsonl(store.iter_entries(), key):
        del chunk
    for chunk in export_csv(store.iter_entries()):
        del chunk
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_export_memory(engine: sa.Engine, key: SigningKey, small: int) -> tuple[int, int, int]:
    """Export peak memory for ``small`` and for ten times as many entries: streaming keeps it flat."""
    peaks = []
    for count in (small, small * 10):
        _reset(engine)
        store = SqlAuditStore(engine, key, checkpoint_every=1000)
        for start in range(0, count, 1000):
            store.append_many(_events(min(1000, count - start)))
        peaks.append(export_peak_bytes(store, key))
    return small * 10, peaks[0], peaks[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="SQLAlchemy URL (default: a temporary SQLite file); its audit tables are dropped")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--verify-events", type=int, default=20000, help="log size for full verification")
    parser.add_argument("--no-growth", action="store_true",
                        help="skip incremental verification on logs of 10^4, 10^5 (and 10^6) entries")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(args.db or f"sqlite:///{tmp}/bench.db")
        key = SigningKey.generate()
        events = _events(args.events)
        store_rate, store = bench_store(engine, key, events)
        rows = [entry_to_row(entry) for entry in store.iter_entries()]
        verify_rate = bench_verify(store, key)
        incremental_seconds, new = bench_incremental(store, events)
        plain_rate = bench_plain(engine, rows)
        bare_rate, full_rate = bench_full_verification(engine, key, args.verify_events)
        large, small_peak, large_peak = bench_export_memory(engine, key, args.events)
        metadata.drop_all(engine)
        engine.dispose()
        growth = bench_incremental_growth(lambda size: _engine(args.db or f"sqlite:///{tmp}/grown-{size}.db"), key,
                                          INCREMENTAL_NEW) if not args.no_growth else []
    print(f"backend        {engine.dialect.name}, {args.events} events")
    print(f"plain INSERT   {plain_rate:10.0f} events/s")
    print(f"SqlAuditStore  {store_rate:10.0f} events/s  ({store_rate / plain_rate:.2f}x plain)")
    print(f"verify         {verify_rate:10.0f} events/s  ({verify_rate / store_rate:.1f}x append rate)")
    print(f"verify, full   {full_rate:10.0f} events/s  ({full_rate / bare_rate:.2f}x a bare canonical-JSON + SHA-256 "
          f"loop at {bare_rate:.0f}/s over the same {args.verify_events} entries, same run; issue 15 asks >= 0.7x)")
    print(f"tree, incr.    {incremental_seconds * 1000:10.1f} ms for {new} new entries on top of {args.events}")
    print(f"export memory  peak {small_peak / 1024:.0f} KiB for {args.events} entries, {large_peak / 1024:.0f} KiB for "
          f"{large}  ({large_peak / small_peak:.2f}x for 10x the entries)")
    if growth:
        print(f"incremental verification of {INCREMENTAL_NEW} new entries on logs of growing size "
              "(full tree verification of the same log as the baseline):")
        print("\n".join(growth))


if __name__ == "__main__":
    main()
