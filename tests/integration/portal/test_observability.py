"""Health, readiness, metrics and logs: useful to operators, and never a PHI leak."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.support.environment import free_port
from tests.support.portal_server import ROOT, portal_env, prepare_database, sign_in
from tests.support.seed import ALICE_MRN

# RFC 3339 in UTC with milliseconds: 2026-11-29T22:32:48.423Z
RFC3339_UTC_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
# What a log line may carry: the formatter's own fields and the whitelist (portal/observability.py).
LOGGED_FIELDS = {"time", "level", "logger", "message", "exception", "stack", "request_id", "action", "error", "route",
                 "method", "status", "duration_ms", "event"}


def test_health_and_readiness(portal):
    assert requests.get(portal.url + "/healthz", timeout=5).json() == {"status": "alive"}
    ready = requests.get(portal.url + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "audit_store": "ok", "keyring": "ok"}


def test_metrics_need_the_token(portal):
    assert requests.get(portal.url + "/metrics", timeout=5).status_code == 401
    wrong = requests.get(portal.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    metrics = requests.get(portal.url + "/metrics", headers={"Authorization": "Bearer test-metrics-token"}, timeout=5)
    assert metrics.status_code == 200
    assert 'portal_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text
    assert "portal_audit_appends_total" in metrics.text


def test_request_ids_are_echoed_and_logs_are_json_without_phi(portal):
    session = sign_in(portal.url, "alice")
    chart = session.get(portal.url + "/chart", headers={"X-Request-ID": "trace-abc-123"}, timeout=10)
    assert chart.headers["X-Request-ID"] == "trace-abc-123" and "Alice Moreau" in chart.text
    session.get(portal.url + "/api/v1/patients", params={"mrn": ALICE_MRN}, timeout=10)
    log = portal.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "trace-abc-123" and line.get("route") == "/chart" for line in lines)
    for secret in ("Moreau", ALICE_MRN, "Alice"):
        assert secret not in log


def test_metrics_carry_the_standard_process_platform_and_gc_series(portal):
    """The default registry's collectors on the portal's own registry: each worker's CPU, memory, file
    descriptors and start time, the Python version and the garbage collector."""
    metrics = requests.get(portal.url + "/metrics", headers={"Authorization": "Bearer test-metrics-token"}, timeout=5).text
    samples = {line.split(" ")[0] for line in metrics.splitlines() if line and not line.startswith("#")}
    for series in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_start_time_seconds",
                   'python_gc_collections_total{generation="0"}', 'python_gc_objects_collected_total{generation="2"}'):
        assert series in samples, series
    assert any(sample.startswith("python_info{") and 'implementation="CPython"' in sample for sample in samples)
    # The worker's own process: its start time is that of the run.py process the fixture started.
    started = float(next(line.split(" ")[1] for line in metrics.splitlines()
                         if line.startswith("process_start_time_seconds ")))
    assert abs(started - _process_start_time(portal.process.pid)) < 1


def _process_start_time(pid: int) -> float:
    """When the process started, from /proc, as Prometheus's ProcessCollector computes it."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def stdout_portal(tmp_path_factory):
    """A run.py worker whose standard output and standard error go to separate files, in a zone that is not UTC."""
    tmp = tmp_path_factory.mktemp("logs")
    port = free_port()
    env = portal_env(tmp, f"sqlite:///{tmp / 'portal.db'}", port, TZ="America/New_York")
    prepare_database(env)
    stdout, stderr = tmp / "stdout.log", tmp / "stderr.log"
    before = datetime.now(timezone.utc)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen([sys.executable, "run.py", "--port", str(port)], env=env, cwd=ROOT, stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, stderr)
        session = sign_in(url, "alice")
        assert "Alice Moreau" in session.get(url + "/chart", timeout=10).text
        assert session.get(url + "/api/v1/patients/not-a-uuid", timeout=10).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    yield stdout.read_text(), stderr.read_text(), before, datetime.now(timezone.utc)


def _wait_until_serving(url: str, process: subprocess.Popen, stderr: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"portal exited early:\n{stderr.read_text()[-3000:]}")
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("portal did not start")


def test_logs_are_json_lines_on_stdout_with_rfc3339_utc_times(stdout_portal):
    stdout, stderr, before, after = stdout_portal
    lines = [json.loads(line) for line in stdout.splitlines()]  # every line of stdout is one JSON object
    assert all(isinstance(line, dict) for line in lines)
    assert any(line["message"].startswith("portal serving on http://") for line in lines)
    assert any(line.get("route") == "/chart" and line.get("status") == 200 for line in lines)
    for line in lines:
        assert RFC3339_UTC_MS.fullmatch(line["time"]), line["time"]
        moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=1) <= moment <= after + timedelta(seconds=1), (line["time"], before, after)
        assert set(line) <= LOGGED_FIELDS, set(line) - LOGGED_FIELDS
    assert not [line for line in stderr.splitlines() if line.startswith("{")], "log lines went to stderr"
    for secret in ("Moreau", ALICE_MRN, "Alice"):
        assert secret not in stdout and secret not in stderr
