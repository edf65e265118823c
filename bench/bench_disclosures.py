"""Cost of the accounting of disclosures: one report against plain verification of the same audit log.

    .venv/bin/python bench/bench_disclosures.py [--entries N] [--rounds R] [--seconds S] [--no-memory]
                                                [--db postgresql+psycopg2://...]

Not a test: prints ratios measured in one run (machines here are noisy, so absolute numbers mean
little). A report (`GET /api/v1/patients/<id>/disclosures` through the in-process test client, as a
compliance officer) is issued only after `portal.auditlog.verify_log` has verified the whole
hash chain and its signed checkpoints, so the baseline is `verify_log` alone on the same log, timed in
interleaved rounds of the same run. The report's call to `verify_log` is also timed from inside (a thin
wrapper), which gives the verification share of each report without comparing separate runs.

The log is built with the audit store's `append_many` from events shaped like `portal.access.record`'s,
in a temporary SQLite file (or the --db scratch PostgreSQL database): a busy patient (Alice, every 20th
entry; 8 in 10 of those are disclosures, the rest her own reads and refusals, which a report leaves out)
and a quiet patient (Bob, three accesses) among 40 patients' entries. Each report must list exactly the
accesses built plus the earlier reports (every issue is itself audited) or the bench stops. It is measured
at N entries, then grown to 10N and measured again (the audit tables are append-only, so the log only
grows): the time follows the size of the whole log, not the number of lines in the report.
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
from portal.auditlog import verify_log  # noqa: E402
from portal.config import Settings  # noqa: E402
from portal.crypto import generate_keyring_json  # noqa: E402
from portal.db import db_session  # noqa: E402
from portal.disclosures import service as disclosures_service  # noqa: E402
from portal.migrate import upgrade  # noqa: E402
from portal.models import LoginSession, Patient, User  # noqa: E402
from portal.seed import seed_demo  # noqa: E402

BUSY = "00000000-0000-4000-8000-000000000001"  # Alice: every 20th entry of the log is about her
QUIET = "00000000-0000-4000-8000-000000000002"  # Bob: three accesses, all near the start of the log
QUIET_AT = (10, 30, 50)
BATCH = 500
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
        if i % 20 == 0:  # the busy patient: 8 in 10 disclosures, then one own read and one refusal (neither listed)
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
    """Times verify_log and reports; the time a report spends inside verify_log is measured in the same call."""

    def __init__(self, app, client, builder: LogBuilder):
        self.app, self.client, self.builder = app, client, builder
        self.issued = {BUSY: 0, QUIET: 0}
        self.last_count = {BUSY: 0, QUIET: 0}
        self.verifying = 0.0
        timed_verify_log = disclosures_service.verify_log
        if timed_verify_log is not verify_log:
            raise SystemExit("portal.disclosures.service no longer calls portal.auditlog.verify_log: "
                             "update this benchmark's baseline")

        def verify_log_timed(*args, **kwargs):  # instrumentation only: the service's own verify_log, timed
            started = time.perf_counter()
            try:
                return timed_verify_log(*args, **kwargs)
            finally:
                self.verifying += time.perf_counter() - started

        disclosures_service.verify_log = verify_log_timed

    def verify(self) -> int:
        with self.app.app_context():
            report = verify_log()
        if not report.ok:
            raise SystemExit(f"verification failed: {report.summary()}")
        return report.entries_checked

    def report(self, patient_id: str) -> dict:
        """One report; it must list the built accesses plus the earlier reports (each issue is itself audited)."""
        response = self.client.get(f"/api/v1/patients/{patient_id}/disclosures")
        if response.status_code != 200:
            raise SystemExit(f"report for {patient_id}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        body = response.get_json()
        expected = self.builder.expected[patient_id] + self.issued[patient_id]
        if body["count"] != expected:
            raise SystemExit(f"report for {patient_id} lists {body['count']} lines, expected {expected}")
        self.issued[patient_id] += 1
        self.last_count[patient_id] = body["count"]
        return body

    def timed_report(self, patient_id: str) -> tuple[float, float]:
        """Seconds for one report, and the seconds of it spent in verify_log."""
        self.verifying = 0.0
        elapsed = seconds(lambda: self.report(patient_id))
        return elapsed, self.verifying

    def measure(self, min_rounds: int, budget: float) -> tuple[dict[str, float], int]:
        """Medians of verify_log, of each report, of the reports' verification shares and of their time outside
        verify_log, over interleaved rounds (so drift on a shared machine hits them alike): at least
        ``min_rounds``, or more until ``budget`` seconds have passed."""
        for warm_up in (self.verify, lambda: self.report(BUSY), lambda: self.report(QUIET)):
            warm_up()  # caches and connection pools
        runs: dict[str, list[float]] = {name: [] for name in ("verify", "busy", "quiet", "busy_share", "quiet_share",
                                                              "busy_own", "quiet_own")}
        deadline = time.perf_counter() + budget
        while len(runs["verify"]) < min_rounds or time.perf_counter() < deadline:
            runs["verify"].append(seconds(self.verify))
            for who, patient_id in (("busy", BUSY), ("quiet", QUIET)):
                elapsed, verifying = self.timed_report(patient_id)
                runs[who].append(elapsed)
                runs[f"{who}_share"].append(verifying / elapsed)
                runs[f"{who}_own"].append(elapsed - verifying)
        return {name: statistics.median(values) for name, values in runs.items()}, len(runs["verify"])

    def memory(self) -> dict[str, float]:
        return {"busy": peak_kib(lambda: self.report(BUSY)), "quiet": peak_kib(lambda: self.report(QUIET))}


def make_app(database_url: str):
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
        token = "bench-session-token"
        db_session.add(LoginSession(token_hash=hashlib.sha256(token.encode()).hexdigest(), user_id=users["demo-cora"]))
        db_session.commit()
        db_session.remove()
    builder = LogBuilder([users["demo-chen"], users["demo-okafor"], users["demo-reyes"]], users["demo-alice"], others)
    client = app.test_client()
    with client.session_transaction() as session:  # signed in as Cora, the compliance officer
        session["sid"], session["_user_id"] = token, users["demo-cora"]
    return app, client, builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2000, help="N: the small log; the large one has 10N")
    parser.add_argument("--rounds", type=int, default=5, help="at least this many timed rounds per log size")
    parser.add_argument("--seconds", type=float, default=3.0, help="... or more rounds until this long has passed")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--db", help="PostgreSQL URL of a scratch database (its public schema is dropped); "
                                     "default: a temporary SQLite file")
    args = parser.parse_args()
    small, large = args.entries, args.entries * 10
    with tempfile.TemporaryDirectory(prefix="portal-bench-disclosures-") as tmp:
        if args.db:
            reset_postgres(args.db)
        app, client, builder = make_app(args.db or f"sqlite:///{tmp}/bench.db")
        bench = Bench(app, client, builder)
        started = time.perf_counter()
        results, rounds, memory, logs, lines = {}, {}, {}, {}, {}
        for size in (small, large):
            with app.app_context():
                builder.grow_to(size)
            results[size], rounds[size] = bench.measure(args.rounds, args.seconds)
            memory[size] = {} if args.no_memory else bench.memory()
            logs[size] = bench.verify()
            lines[size] = {who: (builder.expected[who], bench.last_count[who]) for who in (BUSY, QUIET)}
        elapsed = time.perf_counter() - started
        with app.app_context():
            services.audit_store().engine.dispose()
        app.extensions["portal.engine"].dispose()

    backend = "PostgreSQL" if args.db else "SQLite (temporary file)"
    print(f"accounting of disclosures: {backend}; GET /api/v1/patients/<id>/disclosures as a compliance officer, "
          f"in-process test client; medians of interleaved rounds; {elapsed:.0f} s after setup")
    for size in (small, large):
        (busy, busy_lines), (quiet, quiet_lines) = lines[size][BUSY], lines[size][QUIET]
        print(f"  {size:>6} entries built: log of {logs[size]} (with the bench's own audited requests), {rounds[size]} "
              f"rounds; busy patient {busy} accesses built, {busy_lines} lines; quiet patient {quiet} built, "
              f"{quiet_lines} lines (earlier reports are lines too)")
    print("time")
    base = results[small]["verify"]
    for size in (small, large):
        r = results[size]
        print(f"  verify_log,            {size:>6} entries {r['verify'] * 1000:8.1f} ms  "
              + ("(baseline)" if size == small else f"ratio {r['verify'] / base:.2f} to {small} entries"))
        for who in ("busy", "quiet"):
            growth = "" if size == small else f"; {r[who] / results[small][who]:.2f}x the {small}-entry report"
            print(f"  report, {who:<5} patient, {size:>6} entries {r[who] * 1000:8.1f} ms  "
                  f"ratio {r[who] / r['verify']:.2f} to verify_log, verification {r[who + '_share'] * 100:.0f} % of it "
                  f"({r[who + '_own'] * 1000:.1f} ms outside){growth}")
    added = (logs[large] - logs[small]) / 1000
    per_k = {name: (results[large][name] - results[small][name]) / added * 1000 for name in ("verify", "busy", "quiet")}
    print(f"  growth: +{per_k['verify']:.1f} ms per 1000 log entries for verify_log, +{per_k['busy']:.1f} ms for the busy "
          f"report, +{per_k['quiet']:.1f} ms for the quiet one; at that rate a report on a 1,000,000-entry log takes "
          f"about {max(per_k['busy'], per_k['quiet']):.0f} s")
    if not args.no_memory:
        print("memory (tracemalloc peak during one report)")
        for who in ("busy", "quiet"):
            print(f"  report memory, {who:<5} patient: peak {memory[small][who]:.0f} KiB for {small} entries, "
                  f"{memory[large][who]:.0f} KiB for {large}  ({memory[large][who] / memory[small][who]:.2f}x "
                  f"for 10x the entries)")


if __name__ == "__main__":
    main()
