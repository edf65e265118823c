"""`make bench`: run every benchmark in its short form and write docs/PERFORMANCE.md.

Each benchmark measures the portal against a baseline in the same run (machines here are shared and
noisy, so only ratios are comparable between runs): the chart read against the same serializer on
plaintext tables, audit appends against plain INSERTs, an accounting-of-disclosures report against a chart
read at 10^4, 10^5 and 10^6 log entries (it should grow with log n, not n), chat against a bare
Flask-SocketIO echo server, an app's FHIR Observation search against the chart API read (run.py on
PostgreSQL, loaded with wrk).
The soak is a correctness run under load (nothing lost, nothing duplicated, audit chain intact); it
has no baseline and its latencies are reported as measured. The whole run takes about ten minutes.

    .venv/bin/python bench/run_all.py [--output docs/PERFORMANCE.md] [--redis redis://127.0.0.1:6379/0]
                                      [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]
                                      [--only audit,disclosures]

Each benchmark's output is kept in instance/bench-results/; `--only` re-runs the named ones and
rebuilds the document with the others' last outputs (say so when you commit such a document).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def run(name: str, args: list[str], timeout: float) -> tuple[str, float, int]:
    print(f"== {name}: {' '.join(args)}", flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=timeout)
        output, code = result.stdout + (f"\n[stderr]\n{result.stderr[-2000:]}" if result.returncode else ""), \
            result.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"{exc.stdout or ''}\n[timed out after {timeout:.0f} s]", -1
    elapsed = time.monotonic() - started
    print(output.rstrip(), flush=True)
    print(f"== {name} took {elapsed:.0f} s, exit {code}", flush=True)
    return output, elapsed, code


BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], list[str]], float]] = {
    "http": ("bench_http", lambda a: ["bench/bench_http.py", "--seconds", "6", "--rounds", "2",
                                      "--postgres", a.postgres], 600),
    "writers": ("bench_audit_writers", lambda a: ["bench/bench_audit_writers.py", "--seconds", "4",
                                                  "--postgres", a.postgres], 300),
    "records": ("bench_records", lambda a: ["bench/bench_records.py", "--seconds", "2"], 300),
    "audit": ("bench_audit", lambda a: ["bench/bench_audit.py", "--events", "3000"], 600),
    "disclosures": ("bench_disclosures", lambda a: ["bench/bench_disclosures.py", "--sizes",
                                                    "10000,100000,1000000"], 900),
    "messaging": ("bench_messaging", lambda a: ["bench/bench_messaging.py", "--seconds", "3", "--clients", "50,200",
                                                "--redis", a.redis], 420),
    "fhir": ("bench_fhir", lambda a: ["bench/bench_fhir.py", "--seconds", "6", "--rounds", "2",
                                      "--postgres", a.postgres], 300),
    "soak": ("soak", lambda a: ["bench/soak.py", "--seconds", "20", "--clients", "100", "--rate", "25",
                                "--redis", a.soak_redis], 300),
}


def run_or_load(key: str, args: argparse.Namespace, again: bool) -> tuple[str, float, int]:
    """Run one benchmark and keep its output in --saved, or read the output its last run kept there."""
    saved = Path(args.saved) / f"{key}.json"
    if not again:
        if not saved.exists():
            raise SystemExit(f"no saved output of {key} in {args.saved}: run it too (--only) or run them all")
        output, elapsed, code = json.loads(saved.read_text())
        return output, elapsed, code
    name, arguments, timeout = BENCHMARKS[key]
    result = run(name, arguments(args), timeout)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(list(result)))
    return result


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "unknown"
    try:
        memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        memory = f"{int(memory) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    return {"CPUs": str(os.cpu_count()), "CPU model": model, "Memory": memory,
            "OS": f"{platform.system()} {platform.release()}",
            "Python": platform.python_version(), "Date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def _find(pattern: str, text: str, group: int = 1) -> str | None:
    match = re.search(pattern, text, re.M)
    return match.group(group) if match else None


def records_rows(out: str) -> list[tuple[str, str, str]]:
    rows = []
    base = _find(r"plaintext columns\s+([\d.]+) reads/s\s+p50\s+([\d.]+) ms", out)
    if base:
        rows.append(("Chart read, plaintext tables, no audit (baseline)", f"{float(base):.0f} reads/s", "1.00"))
    for label, pattern in (("Chart read, encrypted columns, no audit",
                            r"encrypted columns\s+([\d.]+) reads/s.*ratio ([\d.]+)"),
                           ("Chart read API (session, policy, audit append)", r"API /api.*?([\d.]+) reads/s.*ratio ([\d.]+)"),
                           ("Chart page (adds templates)", r"chart page.*?([\d.]+) reads/s.*ratio ([\d.]+)")):
        match = re.search(pattern, out)
        if match:
            rows.append((label, f"{float(match.group(1)):.0f} reads/s", match.group(2)))
    return rows


def audit_rows(out: str) -> list[tuple[str, str, str]]:
    rows = []
    plain = _find(r"plain INSERT\s+([\d.]+) events/s", out)
    store = re.search(r"SqlAuditStore\s+([\d.]+) events/s\s+\(([\d.]+)x plain\)", out)
    verify = re.search(r"verify\s+([\d.]+) events/s\s+\(([\d.]+)x append rate\)", out)
    if plain:
        rows.append(("Plain INSERT, one transaction per event (baseline)", f"{plain} events/s", "1.00"))
    if store:
        rows.append(("Audit append (lock, head read, hash, signed checkpoints)", f"{store.group(1)} events/s",
                     store.group(2)))
    if verify and plain and store:
        ratio = float(verify.group(1)) / float(plain)
        rows.append(("Audit verification of the appended log (entries, Merkle tree, signed tree checkpoints)",
                     f"{verify.group(1)} events/s", f"{ratio:.2f}"))
    full = re.search(r"verify, full\s+([\d.]+) events/s\s+\(([\d.]+)x a bare canonical-JSON \+ SHA-256 loop at (\d+)/s "
                     r"over the same (\d+) entries", out)
    if full:
        rows.append((f"Full verification of {full.group(4)} entries (ratio: to a bare canonical-JSON + SHA-256 loop at "
                     f"{full.group(3)}/s over the same entries, same run)", f"{full.group(1)} events/s", full.group(2)))
    incremental = re.search(r"tree, incr\.\s+([\d.]+) ms for (\d+) new entries on top of (\d+)", out)
    if incremental:
        rows.append((f"Merkle tree verification, incremental: {incremental.group(2)} new entries on top of "
                     f"{incremental.group(3)}", f"{incremental.group(1)} ms", "-"))
    growth = re.finditer(r"(\d+) entries\s+full\s+([\d.]+) ms\s+incremental \((\d+) new\)\s+([\d.]+) ms\s+"
                         r"\(([\d.]+)x full, ([\d.]+)x the (\d+)-entry", out)
    for size, full, new, ms, ratio, growth_ratio, smallest in (match.groups() for match in growth):
        rows.append((f"Incremental verification of {new} new entries on a log of {int(size):,} (ratio: to a full "
                     f"verification of that log, {float(full):.0f} ms; {growth_ratio}x the {int(smallest):,}-entry log's)",
                     f"{ms} ms", ratio))
    memory = re.search(r"export memory\s+peak (\d+) KiB for (\d+) entries, (\d+) KiB for (\d+)\s+\(([\d.]+)x", out)
    if memory:
        rows.append((f"Export peak memory, {memory.group(2)} entries (baseline)", f"{memory.group(1)} KiB", "1.00"))
        rows.append((f"Export peak memory, {memory.group(4)} entries (streaming: flat)", f"{memory.group(3)} KiB",
                     memory.group(5)))
    return rows


def disclosures_rows(out: str) -> list[tuple[str, str, str, str]]:
    rows = []
    read = re.compile(r"chart read,\s+(\d+) entries\s+([\d.]+) ms\s+\(baseline\)")
    report = re.compile(r"report, (busy|quiet)\s+patient,\s+(\d+) entries\s+([\d.]+) ms\s+ratio ([\d.]+) to the chart read"
                        r"(?:; ([\d.]+)x the (\d+)-entry report)?")
    memory = re.compile(r"report memory, (busy|quiet)\s+patient: (.*)  \(([\d.]+)x for (\d+)x the entries\)")
    for line in out.splitlines():
        if match := read.search(line):
            size, ms = match.groups()
            rows.append((f"Chart read, {int(size):,} entries", f"{float(ms):.1f} ms", "1.00", "(baseline)"))
        elif match := report.search(line):
            who, size, ms, ratio, growth, base = match.groups()
            note = "the chart read at the same size" + (f"; {growth}x the {int(base):,}-entry report" if growth else "")
            rows.append((f"Report, {who} patient, {int(size):,} entries", f"{float(ms):.1f} ms", ratio, note))
        elif match := memory.search(line):
            who, peaks, ratio, times = match.groups()
            rows.append((f"Report peak memory, {who} patient", peaks, ratio, f"{times}x the entries"))
    return rows


def messaging_rows(out: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for match in re.finditer(r"^\s*(\d+)\s+(\d+) \|\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) \|\s+([\d.]+)\s+([\d.]+)\s+"
                             r"([\d.]+)\s+(\d+) \|\s+([\d.na]+)\s+([\d.na]+)", out, re.M):
        workers, clients, echo, echo_p50, _e99, portal, p50, p99, errors, ratio, p50_ratio = match.groups()
        rows.append((f"{workers} worker{'s' if workers != '1' else ''}, {clients} clients",
                     f"{float(echo):.0f} msg/s, p50 {echo_p50} ms", f"{float(portal):.0f} msg/s, p50 {p50} ms, "
                     f"p99 {p99} ms, errors {errors}", ratio, p50_ratio))
    return rows


def fhir_rows(out: str) -> list[tuple[str, str, str]]:
    rows = []
    pattern = r"{}\s+([\d.]+) req/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms"
    chart = re.search(pattern.format(re.escape("chart API read (baseline)")), out)
    fhir = re.search(pattern.format(re.escape("FHIR Observation search")), out)
    ratio = _find(r"throughput ([\d.]+)", out)
    if chart:
        rows.append(("`GET /api/v1/patients/<id>`, signed-in clinician (baseline)",
                     f"{float(chart.group(1)):.0f} req/s, p50 {chart.group(2)} ms, p99 {chart.group(3)} ms", "1.00"))
    if fhir and ratio:
        rows.append(("`GET /fhir/Observation?patient=<id>&category=laboratory`, app's bearer token",
                     f"{float(fhir.group(1)):.0f} req/s, p50 {fhir.group(2)} ms, p99 {fhir.group(3)} ms", ratio))
    return rows


def table(header: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# Written by hand from py-spy profiles (`.venv/bin/py-spy record -r 200 -f raw --pid <worker>`, 15 s under load);
# re-profile and update this text when the hot paths change. Shares are of the worker's busy samples.
PROFILE_FINDINGS = """## Where the time goes (py-spy and cProfile, by hand)

**Chart read over HTTP** (`GET /api/v1/patients/<id>`, `run.py` on PostgreSQL under `wrk -t2 -c20`, profiled
with `py-spy record -r 200 -d 10 -f raw --pid <worker>`, and in process with `cProfile(time.process_time)`).
The worker is CPU-bound: about 76 % of a core at 20 connections, about **12 ms of CPU per read**, against
about 0.5 ms for the bare endpoint. Inclusive shares of the worker's busy samples:

| Share | Where |
|---|---|
| 35 % | SQLAlchemy executing about 15 statements per read (session, policy, five chart sections, the audit append), each through eventlet's green psycopg2 wait callback (a green `SELECT 1` costs 176 µs against 30 µs blocking) |
| 30 % | `records.reading.read_chart`: the chart's six Core queries, of which about 20 % (of the read) opening 76 AES-GCM fields (`crypto.open_row`, `open_envelope`; half of that base64) |
| 21 % | `access.record`: the durable audit append (through the group commit: lock, head, INSERT, tree nodes, COMMIT) |
| 12 % | `policy.can`: the patient-exists and care-team queries |
| 12 % | `auth.sessions.load_user`: the server-side session and user |

Reaching 0.25x of the bare endpoint (about 2 ms of CPU per read) is not a matter of one hot spot: with this
stack every part above would have to shrink several-fold. The levers left, each to be measured: one
aggregated query per chart (PostgreSQL JSON aggregation), a per-worker session and membership cache with a
documented revocation bound, caching the audit tree's frontier per worker, and more workers (the group
commit lets concurrent requests share the audit transaction: 8 threads append 2.8x one writer).

**Chat send** (100 clients on two workers, ~40 sends/s):

| Share | Where |
|---|---|
| 56 % | `messaging.events.on_send` in all |
| 16 % | `service.store_message`: the seq UPDATE + INSERT commit |
| 14 % | `_authorized` → `authorize`: policy and the audit append (8 %) |
| 9 % | `service.mark_read` (the sender's own read position: an UPDATE, a SELECT and a commit) |
| 8 % | `auth.sessions.load_user`: the session row is re-read for every Socket.IO event |
| 5 % | `_notify_members`: one unread-count query per member |
| 5 % | `_evict_revoked_listeners`: a user lookup and policy check per user in the room, on every send |
| 4 % | `service.find_sent`, run twice per send (once in `on_send`, again in `store_message`) |
| 5 % | Redis publish: now on the worker's publisher greenlet (`portal/message_queue.py`), no longer before the ack |

Changed: publishing to Redis moved off the send path (`portal/message_queue.py`, wired in
`portal/services.py`); besides removing the publish round trip from every ack, it stops a hung Redis from
holding acks back (tests/faults/test_redis_outage.py). Left as recommendations for the messaging owners:
drop the second `find_sent` (pass the first result to `store_message`), fold `mark_read` for the sender into
the `store_message` transaction, and compute `_notify_members`' unread counts in one query.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="for bench_messaging's two-worker runs")
    parser.add_argument("--soak-redis", default="redis://127.0.0.1:6379/2", help="flushed by the soak")
    parser.add_argument("--postgres", default=os.environ.get("PORTAL_TEST_POSTGRES_URL",
                                                             "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server for bench_fhir's scratch database")
    parser.add_argument("--only", help="comma-separated benchmarks to run again (of: " + ", ".join(BENCHMARKS) +
                                       "); the others' outputs are read from --saved, as their last run left them")
    parser.add_argument("--saved", default=str(ROOT / "instance" / "bench-results"),
                        help="where each benchmark's last output is kept")
    args = parser.parse_args(argv)
    started = time.monotonic()
    chosen = set(args.only.split(",")) if args.only else set(BENCHMARKS)
    unknown = chosen - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = {key: run_or_load(key, args, key in chosen) for key in BENCHMARKS}
    total = time.monotonic() - started
    info = machine()
    soak_out = results["soak"][0]
    parts = [
        "# Performance",
        "",
        f"Generated by `make bench` (`bench/run_all.py`) on {info['Date (UTC)']} UTC in {total / 60:.1f} minutes"
        + (f" (re-running only {args.only}; the other sections are the outputs their last run saved)"
           if args.only else "") + ". Do not edit by hand: re-run `make bench`.",
        "",
        "Every figure is a ratio against a baseline measured **in the same run on the same machine** "
        "(ratio = portal / baseline; for throughput higher is better, for latency lower is better). "
        "Absolute numbers are shown for scale only: this machine is shared and noisy, the ratios are what "
        "to compare between runs.",
        "",
        "## Machine",
        "",
        table(["", ""], list(info.items())),
        "",
        "## Chart reads over HTTP, as a browser meets them (`bench/bench_http.py --seconds 6 --rounds 2`)",
        "",
        "`run.py` on PostgreSQL (and on SQLite), a signed-in user, loaded by `wrk -t2 -c20` (C, so the load "
        "generator does not saturate first) on the same two cores. Baseline: a bare Flask app on `eventlet.wsgi` "
        "returning the same bytes, alternated with the portal round by round. The goals are the speed issue's.",
        "",
        "```",
        results["http"][0].strip(),
        "```",
        "",
        "## Audit appends from concurrent writers (`bench/bench_audit_writers.py --seconds 4`)",
        "",
        "PostgreSQL, every append committed (WAL flushed) before it returns, through each process's group "
        "commit as the portal's workers append. Baseline: one writer appending one event at a time.",
        "",
        "```",
        results["writers"][0].strip(),
        "```",
        "",
        "## Chart reads, in-process micro-benchmark (`bench/bench_records.py --seconds 2`)",
        "",
        "Not what a user meets (no HTTP, no server, SQLite): it isolates the application's own cost. "
        "SQLite, in-process test client, one patient's full chart. Baseline: the same Flask app and "
        "serializer reading plaintext copies of the tables, with no session, policy or audit.",
        "",
        table(["Path", "Rate", "Ratio to baseline"], records_rows(results["records"][0])),
        "",
        "## Audit log, in-process micro-benchmark (`bench/bench_audit.py --events 3000`)",
        "",
        "SQLite. Baseline: the same rows through plain INSERTs, one transaction per event. Export memory: "
        "peak allocation while streaming JSON Lines and CSV exports of N and 10N entries (flat = constant memory).",
        "",
        table(["Path", "Rate", "Ratio to baseline"], audit_rows(results["audit"][0])),
        "",
        "## Accounting of disclosures, in-process micro-benchmark "
        "(`bench/bench_disclosures.py --sizes 10000,100000,1000000`)",
        "",
        "SQLite, Flask test client, `GET /api/v1/patients/<id>/disclosures` as a compliance officer. A report "
        "proves each line with an RFC 9162 inclusion proof against the newest signed checkpoint (no full "
        "verification), so it should grow with the log's depth (log n) and the report's lines, not the log's "
        "size. Baseline: a clinician's chart API read through the same app at each size, interleaved (medians). "
        "The log is built with `append_many`: a busy patient (every 20th of the first 10,000 entries, 8 in 10 of "
        "them disclosures: about 400 lines) and a quiet patient (3 accesses) among 40 patients' entries, then "
        "grown to each size. Earlier reports are lines too (each issue is audited).",
        "",
        table(["Measurement", "Time", "Ratio", "Baseline"], disclosures_rows(results["disclosures"][0])),
        "",
        *[line.strip().replace("growth: ", "Growth: ", 1) + "." for line in results["disclosures"][0].splitlines()
          if line.strip().startswith("growth:")],
        "",
        "## Chat (`bench/bench_messaging.py --seconds 3 --clients 50,200`)",
        "",
        "Baseline: a bare Flask-SocketIO echo server of the same shape (join a room, `send` acked and broadcast) "
        "without authentication, storage, encryption or audit; one worker, and two workers sharing Redis. "
        "Four closed-loop senders; delivered msg/s counts `message` events received by all clients.",
        "",
        table(["Setup", "Echo baseline", "Portal", "Throughput ratio", "p50 latency ratio"],
              messaging_rows(results["messaging"][0])),
        "",
        "## Apps over FHIR (`bench/bench_fhir.py --seconds 6 --rounds 2`)",
        "",
        "One `run.py` worker on a scratch PostgreSQL database, loaded over HTTP by `wrk -t2 -c20`, alternating. "
        "Baseline: the chart API read of one patient as a signed-in clinician on her care team (session, policy, "
        "audit append, the whole chart decrypted). Measured: a connected app's search of the same patient's "
        "laboratory Observations (bearer token, policy with the app's scopes, audit append naming the app, US Core "
        "mapping into a searchset Bundle, the grant's use counted). Medians of the rounds.",
        "",
        table(["Request", "Measured", "Throughput ratio"], fhir_rows(results["fhir"][0])),
        "",
        "## Soak (`bench/soak.py --seconds 20 --clients 100 --rate 25`, short form)",
        "",
        "A correctness run under sustained load, not a comparison: two workers, SQLite, Redis queue, 100 "
        "Socket.IO clients chatting across both workers plus 4 HTTP chart readers. It fails unless every "
        "send is acknowledged and stored exactly once, every joined client receives every message once, no "
        "chart read fails, both workers exit 0 on SIGTERM and `flask audit-verify` passes. The full form "
        "(`bench/soak.py`, 60 s, 200 clients) is run by hand.",
        "",
        "```",
        soak_out.strip(),
        "```",
        "",
    ]
    parts += [PROFILE_FINDINGS.strip(), ""]
    parts += ["## Raw output", ""]
    for name, (output, elapsed, code) in results.items():
        parts += [f"### {name} ({elapsed:.0f} s, exit {code})", "", "```", output.strip(), "```", ""]
    Path(args.output).write_text("\n".join(parts))
    print(f"wrote {args.output} ({total:.0f} s in all)")
    failed = [name for name, (_o, _e, code) in results.items() if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
