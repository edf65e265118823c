"""Audited chart reads over real HTTP, as a browser meets them, against a bare endpoint in the same run.

Not a test: prints requests per second, latency percentiles and ratios. The load generator is `wrk`
(Debian's package; C, so it does not saturate before a Flask worker does, as a Python client would on
two cores). Each scenario alternates rounds of its baseline and the portal, so both meet the same
machine; only the ratios compare between runs.

* the baseline: a bare Flask app on `eventlet.wsgi` (the portal's own server) returning the same bytes;
* chart API read, `GET /api/v1/patients/<alice>` as dr.chen (session, policy, decryption, durable audit
  append), one `run.py` worker on PostgreSQL;
* the patient's own chart page, `GET /chart` as alice (HTML), PostgreSQL;
* the chart API read on SQLite;
* two `run.py` workers on PostgreSQL, the load split between them, against one worker.

    python bench/bench_http.py [--seconds 8] [--rounds 2] [--connections 20] [--postgres URL]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portal.devidp import DEMO_USERS  # noqa: E402
from tests.support.environment import free_port  # noqa: E402
from tests.support.portal_server import PortalServer, another_worker, running_portal, sign_in  # noqa: E402

ALICE = next(user.patient_id for user in DEMO_USERS if user.login == "alice")
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
GOALS = {"api_pg": 0.25, "page_pg": 0.20, "api_sqlite": 0.15, "two_workers": 1.4}
P99_GOAL_MS = 60.0


@dataclass(frozen=True)
class Load:
    """What wrk measured: requests per second, latency percentiles, and responses that were not 2xx/3xx."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, cookie: str | None, seconds: float, connections: int, threads: int = 2) -> Load:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "--timeout", "10s", url]
    if cookie:
        command[1:1] = ["-H", f"Cookie: {cookie}"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return Load(float(_found(r"^Requests/sec:\s+([\d.]+)", output)), _ms(_found(r"^\s+50%\s+(\S+)", output)),
                _ms(_found(r"^\s+99%\s+(\S+)", output)),
                int(_found(r"Non-2xx or 3xx responses: (\d+)", output, "0")) + _socket_errors(output))


def _found(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text, re.M)
    if match is None:
        if default is None:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{text}")
        return default
    return match.group(1)


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group())
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.search(r"[a-z]+$", text).group()]


def _socket_errors(output: str) -> int:
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return sum(int(n) for n in match.groups()) if match else 0


def split_wrk(urls: list[str], cookie: str, seconds: float, connections: int) -> Load:
    """One wrk per worker at the same time, the connections shared between them; rates add up."""
    runs = [subprocess.Popen(["wrk", "-t1", f"-c{connections // len(urls)}", f"-d{round(seconds)}s", "--latency",
                              "--timeout", "10s", "-H", f"Cookie: {cookie}", url], stdout=subprocess.PIPE, text=True)
            for url in urls]
    outputs = [run.communicate(timeout=seconds + 60)[0] for run in runs]
    return Load(sum(float(_found(r"^Requests/sec:\s+([\d.]+)", out)) for out in outputs),
                max(_ms(_found(r"^\s+50%\s+(\S+)", out)) for out in outputs),
                max(_ms(_found(r"^\s+99%\s+(\S+)", out)) for out in outputs),
                sum(int(_found(r"Non-2xx or 3xx responses: (\d+)", out, "0")) for out in outputs))


# --- the baseline: the same bytes from bench/bare_server.py -----------------------------------------

@contextmanager
def bare_server(body: bytes, content_type: str, tmp: Path) -> Iterator[str]:
    port, body_file = free_port(), tmp / f"bare-{uuid.uuid4().hex}.bin"
    body_file.write_bytes(body)
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(port), str(body_file),
                                content_type])
    url = f"http://127.0.0.1:{port}/same"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(url, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the portal -------------------------------------------------------------------------------------

@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"portal_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def cookie_of(session: requests.Session) -> str:
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


@dataclass
class Scenario:
    name: str
    label: str
    baseline: list[Load]
    portal: list[Load]

    @property
    def ratio(self) -> float:
        return statistics.median(p.rps for p in self.portal) / statistics.median(b.rps for b in self.baseline)

    def lines(self) -> list[str]:
        base, mine = _median_load(self.baseline), _median_load(self.portal)
        goal = GOALS.get(self.name)
        verdict = f"goal >= {goal:.2f}x: {'met' if goal and self.ratio >= goal else 'NOT met'}" if goal else ""
        return [f"{self.label}",
                f"  baseline   {base.rps:8.0f} req/s  p50 {base.p50_ms:6.1f} ms  p99 {base.p99_ms:6.1f} ms",
                f"  portal     {mine.rps:8.0f} req/s  p50 {mine.p50_ms:6.1f} ms  p99 {mine.p99_ms:6.1f} ms"
                f"  errors {sum(p.errors for p in self.portal)}",
                f"  ratio {self.ratio:.3f}  {verdict}"]


def _median_load(loads: list[Load]) -> Load:
    return Load(statistics.median(x.rps for x in loads), statistics.median(x.p50_ms for x in loads),
                statistics.median(x.p99_ms for x in loads), sum(x.errors for x in loads))


def alternate(name: str, label: str, baseline: Callable[[], Load], portal: Callable[[], Load], rounds: int) -> Scenario:
    scenario = Scenario(name, label, [], [])
    for _ in range(rounds):
        scenario.baseline.append(baseline())
        scenario.portal.append(portal())
    for line in scenario.lines():
        print(line, flush=True)
    return scenario


def measure_portal(server: PortalServer, args: argparse.Namespace, tmp: Path, suffix: str) -> list[Scenario]:
    chen, alice = sign_in(server.url, "dr.chen"), sign_in(server.url, "alice")
    api, page = f"{server.url}/api/v1/patients/{ALICE}", f"{server.url}/chart"
    scenarios = []
    for name, label, url, session in (
            (f"api_{suffix}", f"chart API read as dr.chen ({suffix}, one worker)", api, chen),
            (f"page_{suffix}", f"patient's own chart page as alice ({suffix}, one worker)", page, alice)):
        response = session.get(url, timeout=10)
        response.raise_for_status()
        cookie = cookie_of(session)
        with bare_server(response.content, response.headers["Content-Type"], tmp) as bare:
            scenarios.append(alternate(
                name, label, lambda bare=bare: wrk(bare, None, args.seconds, args.connections),
                lambda url=url, cookie=cookie: wrk(url, cookie, args.seconds, args.connections), args.rounds))
        if suffix == "sqlite":
            break  # the page adds templates, which does not depend on the database
    return scenarios


def two_workers(server: PortalServer, args: argparse.Namespace) -> Scenario:
    chen = sign_in(server.url, "dr.chen")
    cookie = cookie_of(chen)
    with another_worker(server) as second:
        urls = [f"{s.url}/api/v1/patients/{ALICE}" for s in (server, second)]
        return alternate("two_workers", "chart API read on PostgreSQL: two workers (load split) against one",
                         lambda: wrk(urls[0], cookie, args.seconds, args.connections),
                         lambda: split_wrk(urls, cookie, args.seconds, args.connections), args.rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="an admin URL; a fresh database is made")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk; `make bench` installs it)", file=sys.stderr)
        return 2
    quiet = {"PORTAL_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        tmp = Path(folder)
        url = stack.enter_context(postgres_database(args.postgres))
        postgres = stack.enter_context(running_portal(tmp / "pg", url, patients=40, **quiet))
        scenarios = measure_portal(postgres, args, tmp, "pg")
        scenarios.append(two_workers(postgres, args))
        sqlite = stack.enter_context(running_portal(tmp / "lite", f"sqlite:///{tmp / 'lite.db'}", patients=40, **quiet))
        scenarios += measure_portal(sqlite, args, tmp, "sqlite")
    api = next(s for s in scenarios if s.name == "api_pg")
    p99 = _median_load(api.portal).p99_ms
    print(f"chart API read on PostgreSQL: p99 {p99:.1f} ms (goal <= {P99_GOAL_MS:.0f} ms: "
          f"{'met' if p99 <= P99_GOAL_MS else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
