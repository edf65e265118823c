"""Cost of the accounting of disclosures as the log grows: time and memory of one report at 10^4, 10^5 and
10^6 entries. In-process micro-benchmark (Flask test client, no HTTP server, SQLite by default).

    .venv/bin/python bench/bench_disclosures.py [--sizes 10000,100000,1000000] [--rounds R] [--seconds S]
                                                [--no-memory] [--db postgresql+psycopg2://...]

Not a test: prints ratios measured in one run (machines here are noisy, so absolute numbers mean
little). A report (`GET /api/v1/patients/<id>/disclosures` as a compliance officer) proves each of its
lines with an RFC 9162 inclusion proof against the newest signed checkpoint (audit/report.py), so it
should cost O(lines x log n): the baseline is a clinician's chart API read of another patient (`GET
/api/v1/patients/<id>`) through the same app, timed in interleaved rounds of the same run, and each
report is also compared with the same report on the smallest log.

The log is built with the audit store's `append_many` from events shaped like `portal.access.record`'s:
a busy patient (Alice: every 20th of the first 10,000 entries, 8 in 10 of those disclosures, the rest her
own reads and refusals, which a report leaves out) and a quiet patient (Bob, three accesses) among 40
patients' entries. Each report must list exactly the accesses built plus the earlier reports (every
issue is itself audited) or the bench stops. The log only grows (the audit tables are append-only).
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

from audit import AuditEvent, generate_signing_key_pem  # noqa: E402
from portal import create_app, services  # noqa: E402
from portal.config import Settings  # noqa: E402
from portal.crypto import generate_keyring_json  # noqa: E402
from portal.db import db_session  # noqa: E402
from portal.migrate import upgrade  # noqa: E402
from portal.models import LoginSession, Patient, User  # noqa: E402
from portal.seed import seed_demo  # noqa: E402

BUSY = "00000000-0000-4000-8000-000000000001"  # Alice: every 20th entry of the log is about her
QUIET = "00000000-0000-4000-8000-000000000002"  # Bob: three accesses, all near the start of the log
QUIET_AT = (10, 30, 50)
BUSY_UNTIL = 10_000  # the busy patient's accesses stop here, so its line count is the same at every size
BATCH = 2000
SECTIONS = ("chart", "results", "medications", "allergies", "notes", "problems")
OTHER_ACTIONS = (("chart.read", "results"), ("patient.search.hit", "search_result"), ("chart.read", "chart"),
                 ("conversation.history", "conversation"), ("chart.read", "medications"))


class LogBuilder:
    """Appends deterministic audit events and counts the lines the reports must list."""

    def __init__(self, clinicians: list[str], own_account: str, others: list[str]):
        self.clinicians, self.own_account, self.others = clinicians, own_account, others
        self.index = 0
        self.expected = {BUSY: 0, QUIET: 0}

    def _event(self, i: int) -> AuditEvent:
        clinician = self.clinicians[i % len(self.clinicians)]
        request = {"source_ip": f"10.0.{i % 7}.{i % 200 + 1}", "user_agent": "Mozilla/5.0 (bench)",
                   "request_id": f"bench-{i:08d}", "session_hash": hashlib.sha256(clinician.encode()).hexdigest()[:16]}
        if i % 20 == 0 and i < BUSY_UNTIL:  # busy: 8 in 10 disclosures, one own read, one refusal (neither listed)
            kind, section = (i // 20) % 10, SECTIONS[(i // 20) % len(SECTIONS)]
            if kind == 9:
                return AuditEvent(action="chart.read", outcome="allowed", actor_id=self.own_account,
                                  actor_role="patient", patient_id=BUSY, resource_type="chart", resource_id=BUSY,
                                  reason="own chart", **request)
            if kind == 8:
                return AuditEvent(action="chart.read", outcome="denied", actor_id=clinician, actor_role="clinician",
                                  patient_id=BUSY, resource_type=section, resource_id=BUSY,
                                  reason="not on the patient's care team", **request)
            self.expected[BUSY] += 1
            return AuditEvent(action="chart.read", outcome="allowed", actor_id=clinician, actor_role="clinician",
                              patient_id=BUSY, resource_type=section, resource_id=BUSY, reason="care team member",
                              **request)
        if i in QUIET_AT:
            self.expected[QUIET] += 1
            return AuditEvent(action="chart.read", outcome="allowed", actor_id=clinician, actor_role="clinician",
                              patient_id=QUIET, resource_type="chart", resource_id=QUIET, reason="care team member",
                              **request)
        if i % 50 == 7:  # entries about no patient at all
            return AuditEvent(action="signin", outcome="allowed", actor_id=clinician, actor_role="clinician", **request)
        patient = self.others[i % len(self.others)]
        action, resource_type = OTHER_ACTIONS[i % len(OTHER_ACTIONS)]
        return AuditEvent(action=action, outcome="allowed", actor_id=clinician, actor_role="clinician",
                          patient_id=patient, resource_type=resource_type, resource_id=patient,
                          reason="care team member", details={"results": i % 20} if action == "chart.read" else {},
                          **request)

    def grow_to(self, count: int) -> None:
        """Append events until this builder has written ``count`` of them."""
        store = services.audit_store()
        while self.index < count:
            batch = [self._event(i) for i in range(self.index, min(self.index + BATCH, count))]
            store.append_many(batch)
            self.index += len(batch)


def reset_postgres(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def peak_kib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


class Bench:
    """Times reports against the chart read of the same client; each report's lines are checked."""

    def __init__(self, client, reader, builder: LogBuilder):
        self.client, self.reader, self.builder = client, reader, builder
        # a chart the clinician may read that is neither report's patient (each read would be one more line)
        self.readable = next((patient for patient in builder.others
                              if reader.get(f"/api/v1/patients/{patient}").status_code == 200), None)
        if self.readable is None:
            raise SystemExit("the clinician can read none of the other patients' charts")
        self.issued = {BUSY: 0, QUIET: 0}
        self.last_count = {BUSY: 0, QUIET: 0}

    def chart_read(self) -> None:
        response = self.reader.get(f"/api/v1/patients/{self.readable}")
        if response.status_code != 200:
            raise SystemExit(f"chart read: {response.status_code} {response.get_data(as_text=True)[:300]}")

    def report(self, patient_id: str) -> dict:
        """One report; it must list the built accesses plus the earlier reports (each issue is itself audited)."""
        response = self.client.get(f"/api/v1/patients/{patient_id}/disclosures")
        if response.status_code != 200:
            raise SystemExit(f"report for {patient_id}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        body = response.get_json()
        expected = self.builder.expected[patient_id] + self.issued[patient_id]
        if body["count"] != expected or len(body["proof"]["entries"]) != expected:
            raise SystemExit(f"report for {patient_id} lists {body['count']} lines, expected {expected}")
        self.issued[patient_id] += 1
        self.last_count[patient_id] = body["count"]
        return body

    def measure(self, min_rounds: int, budget: float) -> tuple[dict[str, float], int]:
        """Medians of the chart read and of each report over interleaved rounds (so drift on a shared machine
        hits them alike): at least ``min_rounds``, or more until ``budget`` seconds have passed."""
        for warm_up in (self.chart_read, lambda: self.report(BUSY), lambda: self.report(QUIET)):
            warm_up()  # caches and connection pools
        runs: dict[str, list[float]] = {"read": [], "busy": [], "quiet": []}
        deadline = time.perf_counter() + budget
        while len(runs["read"]) < min_rounds or time.perf_counter() < deadline:
            runs["read"].append(seconds(self.chart_read))
            runs["busy"].append(seconds(lambda: self.report(BUSY)))
            runs["quiet"].append(seconds(lambda: self.report(QUIET)))
        return {name: statistics.median(values) for name, values in runs.items()}, len(runs["read"])

    def memory(self) -> dict[str, float]:
        return {"busy": peak_kib(lambda: self.report(BUSY)), "quiet": peak_kib(lambda: self.report(QUIET))}


def make_app(database_url: str):
    """The app on a fresh database, with two signed-in test clients: Cora (reports) and Dr. Chen (chart reads)."""
    settings = Settings(secret_key="b" * 40, database_url=database_url, keyring=generate_keyring_json(),
                        audit_signing_key=generate_signing_key_pem().decode(),
                        oidc_issuer="http://127.0.0.1:9/devidp", oidc_client_id="c", oidc_client_secret="s", env="test",
                        report_rate_limit="100000 per minute")  # the bench measures reports, not the limit
    upgrade(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        seed_demo(settings.oidc_issuer, population=40)
        users = {user.subject: user.id for user in db_session.scalars(sa.select(User))}
        others = sorted(set(db_session.scalars(sa.select(Patient.id))) - {BUSY, QUIET})
        for subject in ("demo-cora", "demo-chen"):
            db_session.add(LoginSession(token_hash=hashlib.sha256(subject.encode()).hexdigest(), user_id=users[subject]))
        db_session.commit()
        db_session.remove()
    builder = LogBuilder([users["demo-chen"], users["demo-okafor"], users["demo-reyes"]], users["demo-alice"], others)
    clients = {}
    for subject in ("demo-cora", "demo-chen"):
        clients[subject] = app.test_client()
        with clients[subject].session_transaction() as session:
            session["sid"], session["_user_id"] = subject, users[subject]
    return app, clients["demo-cora"], clients["demo-chen"], builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="log sizes to measure at, growing")
    parser.add_argument("--rounds", type=int, default=5, help="at least this many timed rounds per log size")
    parser.add_argument("--seconds", type=float, default=2.0, help="... or more rounds until this long has passed")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--db", help="PostgreSQL URL of a scratch database (its public schema is dropped); "
                                     "default: a temporary SQLite file")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="portal-bench-disclosures-") as tmp:
        if args.db:
            reset_postgres(args.db)
        app, client, reader, builder = make_app(args.db or f"sqlite:///{tmp}/bench.db")
        bench = Bench(client, reader, builder)
        results, rounds, memory, lines, built = {}, {}, {}, {}, {}
        for size in sizes:
            started = time.perf_counter()
            with app.app_context():
                builder.grow_to(size)
            built[size] = time.perf_counter() - started
            results[size], rounds[size] = bench.measure(args.rounds, args.seconds)
            memory[size] = {} if args.no_memory else bench.memory()
            lines[size] = dict(bench.last_count)
        with app.app_context():
            services.audit_store().engine.dispose()
        app.extensions["portal.engine"].dispose()
    report(args, sizes, results, rounds, memory, lines, built)


def report(args, sizes, results, rounds, memory, lines, built) -> None:
    backend = "PostgreSQL" if args.db else "SQLite (temporary file)"
    print(f"accounting of disclosures (in-process micro-benchmark): {backend}; GET /api/v1/patients/<id>/disclosures "
          f"as a compliance officer through the Flask test client; medians of interleaved rounds")
    first = sizes[0]
    for size in sizes:
        print(f"  {size:>8} entries (built in {built[size]:.0f} s), {rounds[size]} rounds: busy patient "
              f"{lines[size][BUSY]} lines, quiet patient {lines[size][QUIET]} lines")
    print("time")
    for size in sizes:
        r = results[size]
        print(f"  chart read,           {size:>8} entries {r['read'] * 1000:8.1f} ms  (baseline)")
        for who in ("busy", "quiet"):
            growth = "" if size == first else f"; {r[who] / results[first][who]:.2f}x the {first}-entry report"
            print(f"  report, {who:<5} patient, {size:>8} entries {r[who] * 1000:8.1f} ms  "
                  f"ratio {r[who] / r['read']:.2f} to the chart read{growth}")
    last = sizes[-1]
    per_line = (results[last]["busy"] - results[last]["quiet"]) / max(1, lines[last][BUSY] - lines[last][QUIET])
    print(f"  growth: {last // first}x the entries made the quiet report {results[last]['quiet'] / results[first]['quiet']:.2f}x "
          f"and the busy one {results[last]['busy'] / results[first]['busy']:.2f}x as long; each line costs about "
          f"{per_line * 1000:.2f} ms at {last} entries")
    if not args.no_memory:
        print("memory (tracemalloc peak during one report)")
        for who in ("busy", "quiet"):
            print(f"  report memory, {who:<5} patient: " + ", ".join(
                f"{memory[size][who]:.0f} KiB at {size}" for size in sizes)
                + f"  ({memory[last][who] / memory[first][who]:.2f}x for {last // first}x the entries)")


if __name__ == "__main__":
    main()
