"""Audit append throughput with concurrent writers on PostgreSQL, each append durable before it returns.

    .venv/bin/python bench/bench_audit_writers.py [--postgres URL] [--seconds 4]

Not a test: prints appends per second and ratios against one writer measured in the same run.

* one writer: one thread appending one event at a time (the baseline);
* 8 threads in one process through its group commit, as a worker's concurrent requests append;
* 8 processes, one thread each, as 8 single-request workers would;
* 8 processes with 8 threads each (several busy workers).

Every append commits with PostgreSQL's default ``synchronous_commit=on``: the numbers include the WAL
flush a request waits for before it is answered.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditEvent, GroupCommit, SigningKey, SqlAuditStore, create_tables, verify_store  # noqa: E402

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _append_for(url: str, key_pem: bytes, threads: int, seconds: float, counts) -> None:
    """Append as fast as ``threads`` callers can through one process's group commit, for ``seconds``."""
    engine = sa.create_engine(url, pool_size=threads + 2)
    appender = GroupCommit(SqlAuditStore(engine, SigningKey.from_pem(key_pem), checkpoint_every=100))
    deadline = time.monotonic() + seconds
    done = [0] * threads

    def run(index: int) -> None:
        while time.monotonic() < deadline:
            appender.append(AuditEvent(action="chart.read", outcome="allowed", actor_id=f"t{index}",
                                       patient_id="p1", details={"n": done[index]}))
            done[index] += 1

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts.put(sum(done))
    engine.dispose()


def measure(url: str, key: SigningKey, processes: int, threads: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    counts = context.Queue()
    workers = [context.Process(target=_append_for, args=(url, key.private_pem(), threads, seconds, counts))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    total = sum(counts.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds  # each process appends for ``seconds`` once it is ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a server where a scratch database may be made")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    name = f"bench_writers_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    try:
        engine = sa.create_engine(url)
        create_tables(engine)
        key = SigningKey.generate()
        baseline = measure(url, key, 1, 1, args.seconds)
        print(f"one writer                     {baseline:8.0f} appends/s  (baseline)")
        for label, processes, threads in (("8 threads, one process", 1, 8), ("8 processes, 1 thread each", 8, 1),
                                          ("8 processes, 8 threads each", 8, 8)):
            rate = measure(url, key, processes, threads, args.seconds)
            print(f"{label:30} {rate:8.0f} appends/s  ratio {rate / baseline:.2f}")
        report = verify_store(SqlAuditStore(engine, None, checkpoint_every=100), key.verify_key)
        print(f"verified after the run: {'intact' if report.ok else report.problem} ({report.entries_checked} entries)")
        engine.dispose()
        return 0 if report.ok else 1
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
