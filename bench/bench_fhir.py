"""Cost of an app's FHIR Observation search against the chart API read, over real HTTP, in one run.

    .venv/bin/python bench/bench_fhir.py [--postgres URL] [--seconds S] [--rounds R] [--connections C]

Not a test: prints the ratio measured in this run (machines here are noisy, so absolute numbers mean
little). One `run.py` worker on a scratch PostgreSQL database (created on the server of --postgres and
dropped afterwards) is loaded with `wrk` (Debian's package: `apt-get install wrk`), alternately:

* baseline: `GET /api/v1/patients/<Alice>` as Dr Chen, a signed-in clinician on her care team (session
  cookie; policy, audit append, the whole chart decrypted);
* FHIR: `GET /fhir/Observation?patient=<Alice>&category=laboratory` with a connected app's bearer token
  (token lookup, policy with the app's scopes, audit append naming the app, her results decrypted and
  mapped to US Core Observations in a searchset Bundle, the grant's use counted).

The app is registered with `flask smart-register-app` and connected the way a person does it: Alice
signs in through the development provider and allows it on the consent page. Each request of either
kind is answered only after its audit entry is durable. Any non-2xx answer stops the bench.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.environment import free_port  # noqa: E402
from tests.support.portal_server import PortalServer, portal_env, prepare_database, sign_in  # noqa: E402
from tests.support.smart_apps import authorize_url, decide, exchange, open_consent, query_of, register_app  # noqa: E402

ALICE = "00000000-0000-4000-8000-000000000001"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def scratch_database(server_url: str) -> str:
    name = f"portal_bench_fhir_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def connected_token(portal: PortalServer) -> str:
    """Register an app, connect it as Alice through the consent page, return its access token."""
    app = register_app(portal.env, "Bench App", public=True, scopes="launch/patient patient/Observation.rs")
    alice = sign_in(portal.url, "alice")
    url, verifier = authorize_url(portal.url, app, scope="launch/patient patient/Observation.rs")
    location = decide(alice, open_consent(alice, url))
    answer = exchange(portal.url, app, query_of(location)["code"], verifier)
    if answer.status_code != 200:
        raise SystemExit(f"token exchange failed: {answer.status_code} {answer.text[:300]}")
    return answer.json()["access_token"]


def wrk(url: str, header: str, seconds: int, connections: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency", "-H", header, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    out = result.stdout
    if result.returncode != 0 or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk against {url} reported errors:\n{out}\n{result.stderr}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return {"rate": rate, "p50": latency["50"], "p99": latency["99"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get("PORTAL_TEST_POSTGRES_URL",
                                                             "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server (any database on it): a scratch database is created there")
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline/FHIR rounds")
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench installs it)")
    database = scratch_database(args.postgres)
    try:
        with tempfile.TemporaryDirectory(prefix="portal-bench-fhir-") as tmp:
            port = free_port()
            env = portal_env(Path(tmp), database, port, PORTAL_SESSION_IDLE_MINUTES="60",
                             PORTAL_LOG_LEVEL="WARNING")
            prepare_database(env, patients=40)
            with PortalServer(env, port, Path(tmp) / "server.log") as portal:
                token = connected_token(portal)
                chen = sign_in(portal.url, "dr.chen")
                cookie = "Cookie: " + "; ".join(f"{c.name}={c.value}" for c in chen.cookies)
                targets = {
                    "chart": (f"{portal.url}/api/v1/patients/{ALICE}", cookie),
                    "fhir": (f"{portal.url}/fhir/Observation?patient={ALICE}&category=laboratory",
                             f"Authorization: Bearer {token}"),
                }
                for url, header in targets.values():  # warm-up, and a check that both answer
                    wrk(url, header, 2, 4)
                runs: dict[str, list[dict[str, float]]] = {"chart": [], "fhir": []}
                for _ in range(args.rounds):
                    for name, (url, header) in targets.items():
                        runs[name].append(wrk(url, header, args.seconds, args.connections))
    finally:
        drop_database(args.postgres, database)

    median = {name: {key: statistics.median(r[key] for r in results) for key in ("rate", "p50", "p99")}
              for name, results in runs.items()}
    chart, fhir = median["chart"], median["fhir"]
    print(f"FHIR search vs chart API read: run.py (one eventlet worker) on PostgreSQL, wrk -t2 -c{args.connections}, "
          f"{args.rounds} alternating rounds of {args.seconds} s, medians")
    print(f"  chart API read (baseline)  {chart['rate']:8.1f} req/s  p50 {chart['p50']:7.1f} ms  p99 {chart['p99']:7.1f} ms")
    print(f"  FHIR Observation search    {fhir['rate']:8.1f} req/s  p50 {fhir['p50']:7.1f} ms  p99 {fhir['p99']:7.1f} ms")
    print(f"  ratio (FHIR / chart): throughput {fhir['rate'] / chart['rate']:.2f}, p50 latency "
          f"{fhir['p50'] / chart['p50']:.2f}x")


if __name__ == "__main__":
    main()
