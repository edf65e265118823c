"""The compliance console on PostgreSQL, and its live feed across two workers sharing a Redis queue.

Skipped unless PORTAL_TEST_POSTGRES_URL / PORTAL_TEST_REDIS_URL name running services (CI sets both).
"""
from __future__ import annotations

import csv
import io
import re
import threading

import pytest
import socketio

from tests.support.portal_server import another_worker, get_stepping_up, running_portal, sign_in
from tests.support.seed import ALICE


def _cookie_header(session) -> str:
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in session.cookies)


@pytest.mark.postgres
def test_console_flags_charts_and_exports_on_postgres(tmp_path, postgres_url):
    with running_portal(tmp_path, postgres_url, patients=4) as server:
        chen, cora = sign_in(server.url, "dr.chen"), sign_in(server.url, "cora")
        assert chen.get(f"{server.url}/patients/{ALICE}", timeout=10).status_code == 200
        reyes = sign_in(server.url, "dr.reyes")
        assert reyes.get(f"{server.url}/patients/{ALICE}", timeout=10).status_code == 403

        found = cora.get(f"{server.url}/compliance/api/events", params={"patient": ALICE, "action": "chart"},
                         timeout=10).json()
        assert {"Dr. Mei Chen", "Dr. Ana Reyes"} <= {event["actor_name"] for event in found["events"]}

        page = cora.get(f"{server.url}/compliance/", params={"action": "chart"}, timeout=10)
        assert page.status_code == 200
        hourly = re.findall(r"<th scope=\"row\">(\d{4}-\d\d-\d\d \d\d:00)</th><td>(\d+)</td>", page.text)
        assert len(hourly) >= 24 and sum(int(count) for _, count in hourly) >= 2

        flags = cora.get(f"{server.url}/compliance/flags", timeout=10)
        assert flags.status_code == 200 and "not on the patient&#39;s care team" in flags.text

        export = get_stepping_up(cora, f"{server.url}/compliance/export", "cora", params={"format": "csv", "patient": ALICE})
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert rows and int(export.headers["X-Audit-Count"]) == len(rows)

        alice = sign_in(server.url, "alice")
        assert "Dr. Mei Chen" in alice.get(f"{server.url}/chart/access-log", timeout=10).text


@pytest.mark.redis
def test_live_feed_reaches_officers_on_another_worker(tmp_path, redis_url):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=4,
                        PORTAL_MESSAGE_QUEUE=redis_url) as first:
        with another_worker(first) as second:
            cora, chen = sign_in(first.url, "cora"), sign_in(first.url, "dr.chen")
            arrived = threading.Event()
            client = socketio.Client(reconnection=False)

            @client.on("audit_event", namespace="/audit")
            def _on_event(data):
                if data.get("action") == "chart.read" and data.get("patient_id") == ALICE:
                    arrived.set()

            client.connect(first.url, headers={"Cookie": _cookie_header(cora)}, namespaces=["/audit"],
                           wait_timeout=10)
            try:
                assert chen.get(f"{second.url}/patients/{ALICE}", timeout=10).status_code == 200
                assert arrived.wait(10), "an event recorded on worker two never reached worker one's feed"
            finally:
                client.disconnect()
