"""Health, readiness, metrics and logs: useful to operators, and never a PHI leak."""
import json

import requests

from tests.support.portal_server import sign_in


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
    session.get(portal.url + "/api/v1/patients", params={"mrn": "RC-100001"}, timeout=10)
    log = portal.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "trace-abc-123" and line.get("route") == "/chart" for line in lines)
    for secret in ("Moreau", "RC-100001", "Alice"):
        assert secret not in log
