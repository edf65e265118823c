"""The compliance console: search, flags, live feed, exports, integrity, patient view.

In process (tests/support/harness.py), one transaction per module; every test signs in through the development
OpenID provider's forms as over HTTP, the live feed is read with Flask-SocketIO's test client and the `flask`
commands run through Flask's CLI runner. Over real processes: the feed across workers is in
test_compliance_scaleout.py, `flask audit-verify` as a command in test_backup_restore.py and
test_audit_checkpoints_deleted.py, the console in a browser in tests/e2e/test_compliance_journey.py.
The module is long because the console's topics share the module's signed-in officer and clinician and
the log their actions build up.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.auditevent import AuditEvent

from audit import CSV_COLUMNS
from audit.events import parse_time
from portal.compliance.events import is_after_hours
from tests.support.audit_log import audit_rows
from tests.support.harness import socket_client
from tests.support.portal_server import ROOT, break_glass, csrf_token, get_stepping_up, sign_in
from tests.support.seed import ALICE


@pytest.fixture(scope="module")
def portal(portal_in_process_for_module):
    return portal_in_process_for_module


@pytest.fixture(scope="module")
def cora(portal):
    return sign_in(portal.url, "cora")


@pytest.fixture(scope="module")
def chen(portal):
    return sign_in(portal.url, "dr.chen")


def _events(session, url: str, **params) -> dict:
    response = session.get(f"{url}/compliance/api/events", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _open_alice_chart(portal, chen) -> None:
    response = chen.get(f"{portal.url}/patients/{ALICE}", timeout=10)
    assert response.status_code == 200, response.text[:500]


def _hidden_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF form field"
    return match.group(1)


# --------------------------------------------------------------------------- search


def test_filter_by_patient_and_action_finds_the_chart_read(portal, cora, chen):
    _open_alice_chart(portal, chen)

    found = _events(cora, portal.url, patient=ALICE, action="chart.read")
    reads = [event for event in found["events"] if event["actor_name"] == "Dr. Mei Chen"]
    assert reads, found
    assert all(event["patient_id"] == ALICE and event["action"].startswith("chart.read") for event in found["events"])
    assert reads[0]["outcome"] == "allowed" and reads[0]["resource_type"] == "chart"

    prefix = _events(cora, portal.url, patient=ALICE, action="chart", actor=reads[0]["actor_id"])
    assert {event["seq"] for event in reads} <= {event["seq"] for event in prefix["events"]}

    page = cora.get(f"{portal.url}/compliance/", params={"patient": ALICE, "action": "chart.read"}, timeout=10)
    assert page.status_code == 200
    assert "Dr. Mei Chen" in page.text and f'data-seq="{reads[0]["seq"]}"' in page.text

    searches = _events(cora, portal.url, action="audit.search", outcome="allowed")["events"]
    recorded = [event for event in searches if f"patient_id={ALICE}" in (event["details"].get("filter") or "")]
    assert recorded and isinstance(recorded[0]["details"]["count"], int) and recorded[0]["details"]["count"] >= 1


def test_search_pages_by_seq_descending(portal, cora):
    first = _events(cora, portal.url, before="", outcome="allowed")
    seqs = [event["seq"] for event in first["events"]]
    assert seqs == sorted(seqs, reverse=True)
    if first["next_before"]:
        older = _events(cora, portal.url, outcome="allowed", before=first["next_before"])
        assert max(event["seq"] for event in older["events"]) < min(seqs)


def test_malformed_filters_are_rejected_with_a_message(portal, cora):
    page = cora.get(f"{portal.url}/compliance/", params={"since": "last tuesday"}, timeout=10)
    assert page.status_code == 400
    assert "data-filter-error" in page.text and "&#39;since&#39; must be" in page.text

    backwards = cora.get(f"{portal.url}/compliance/",
                         params={"since": "2024-05-02T00:00", "until": "2024-05-01T00:00"}, timeout=10)
    assert backwards.status_code == 400 and "earlier than" in backwards.text

    api = cora.get(f"{portal.url}/compliance/api/events", params={"until": "13/45/2024"}, timeout=10)
    assert api.status_code == 400
    assert api.json()["error"]["code"] == "bad_filter" and "until" in api.json()["error"]["message"]

    assert cora.get(f"{portal.url}/compliance/api/events", params={"outcome": "maybe"}, timeout=10).status_code == 400


def test_a_malformed_page_cursor_is_a_400_and_an_audited_attempt(portal, cora):
    before = len(audit_rows(portal.database, action="audit.search"))
    for path in ("/compliance/", "/compliance/api/events"):
        assert cora.get(f"{portal.url}{path}", params={"before": "abc"}, timeout=10).status_code == 400
    attempts = audit_rows(portal.database, action="audit.search")[before:]
    assert len(attempts) == 2 and all('"valid":false' in row["details"].replace(" ", "") for row in attempts)


@pytest.mark.parametrize("field, value", [("until", "9999-12-31T23:59"), ("since", "0001-01-02T00:00"),
                                          ("until", "0001-01-01T00:00+01:00")])
def test_times_at_the_ends_of_the_calendar_are_a_400_naming_the_field(portal, cora, field, value):
    for path in ("/compliance/", "/compliance/flags", "/compliance/api/events"):
        response = cora.get(f"{portal.url}{path}", params={field: value}, timeout=10)
        assert response.status_code == 400, (path, response.status_code)
        assert f"&#39;{field}&#39; must" in response.text or f"'{field}' must" in response.text, path


def test_datetime_local_and_iso_ranges_are_accepted(portal, cora):
    assert cora.get(f"{portal.url}/compliance/", params={"since": "2020-01-01T07:30"}, timeout=10).status_code == 200
    found = _events(cora, portal.url, since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00+00:00")
    assert found["events"] == [] and found["total"] == 0


@pytest.mark.parametrize("login", ["alice", "dr.chen", "nora"])
def test_other_roles_are_refused(portal, login):
    session = sign_in(portal.url, login)
    for path in ("/compliance/", "/compliance/flags", "/compliance/integrity", "/compliance/events/1",
                 "/compliance/export?format=csv"):
        assert session.get(portal.url + path, timeout=10).status_code == 403, path
    api = session.get(f"{portal.url}/compliance/api/events", timeout=10)
    assert api.status_code == 403 and api.json()["error"]["code"] == "forbidden"


def test_api_without_session_gets_401(portal):
    response = requests.get(f"{portal.url}/compliance/api/events", timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"


def test_event_detail_page(portal, cora, chen):
    _open_alice_chart(portal, chen)
    seq = _events(cora, portal.url, patient=ALICE, action="chart.read")["events"][0]["seq"]
    page = cora.get(f"{portal.url}/compliance/events/{seq}", timeout=10)
    assert page.status_code == 200
    assert "Dr. Mei Chen" in page.text and "matches its contents" in page.text and ALICE in page.text
    assert cora.get(f"{portal.url}/compliance/events/999999999", timeout=10).status_code == 404


def test_console_charts_have_text_alternatives(portal, cora):
    page = cora.get(f"{portal.url}/compliance/", timeout=10).text
    assert 'role="img"' in page and "Events per hour as a table" in page
    assert re.search(r'<th scope="row">chart\.read</th>', page)


# --------------------------------------------------------------------------- flags


def test_break_glass_is_flagged_with_its_reason_and_can_be_reviewed(portal, cora):
    reyes = sign_in(portal.url, "dr.reyes")
    refused = reyes.get(f"{portal.url}/patients/{ALICE}", timeout=10)
    assert refused.status_code == 403
    reason = f"Unconscious in the ED, need allergies now {uuid.uuid4().hex[:8]}"
    opened = break_glass(reyes, portal.url, ALICE, reason, "dr.reyes")
    assert opened.status_code == 200 and opened.url.endswith(f"/patients/{ALICE}")
    granted = audit_rows(portal.database, action="break_glass.granted")[-1]
    assert json.loads(granted["details"])["step_up"] == "break_glass"

    page = cora.get(f"{portal.url}/compliance/flags", timeout=10)
    assert page.status_code == 200
    assert reason in page.text and "Dr. Ana Reyes" in page.text
    grant = re.search(r'<tr class="flagged" data-break-glass="([^"]+)">', page.text)
    assert grant, "the unreviewed grant is not flagged"
    assert "not on the patient&#39;s care team" in page.text  # the refused read is listed as denied

    reviewed = cora.post(f"{portal.url}/compliance/flags/break-glass/{grant.group(1)}/review", timeout=10,
                         data={"csrf_token": csrf_token(cora, f"{portal.url}/compliance/flags")})
    assert reviewed.status_code == 200 and "marked as reviewed" in reviewed.text
    assert f'<tr class="" data-break-glass="{grant.group(1)}">' in reviewed.text
    assert "Cora Whitfield" in reviewed.text

    review_events = _events(cora, portal.url, action="audit.review")["events"]
    assert any(event["details"].get("break_glass") == grant.group(1) for event in review_events)

    without_token = cora.post(f"{portal.url}/compliance/flags/break-glass/{grant.group(1)}/review", timeout=10)
    assert without_token.status_code == 400


def test_sign_in_failures_are_flagged(portal, cora):
    requests.get(f"{portal.url}/auth/callback", params={"state": "forged", "code": "x"}, timeout=10)
    page = cora.get(f"{portal.url}/compliance/flags", timeout=10).text
    section = page[page.index('id="signin-failures"'):page.index('id="after-hours"')]
    assert "signin.failure" in section and 'class="denied flagged"' in section


def test_chart_access_outside_working_hours_is_flagged(portal, cora, chen):
    _open_alice_chart(portal, chen)
    read = _events(cora, portal.url, patient=ALICE, action="chart.read")["events"][0]
    page = cora.get(f"{portal.url}/compliance/flags", timeout=10).text
    section = page[page.index('id="after-hours"'):]
    listed = f'data-seq="{read["seq"]}"' in section
    assert listed == is_after_hours(parse_time(read["time"])), (read["time"], listed)


def test_reviewing_is_compliance_only(portal, chen):
    page = chen.get(f"{portal.url}/patients/{ALICE}", timeout=10)
    token = csrf_token(chen, f"{portal.url}/patients/{ALICE}") if page.ok else ""
    refused = chen.post(f"{portal.url}/compliance/flags/break-glass/anything/review", data={"csrf_token": token},
                        timeout=10)
    assert refused.status_code == 403


# --------------------------------------------------------------------------- live feed


def test_live_feed_delivers_new_events_to_compliance(portal, cora, chen):
    client = socket_client(portal.app, cora, "/audit")
    assert client.is_connected("/audit")
    try:
        _open_alice_chart(portal, chen)
        received = [packet["args"][0] for packet in client.get_received("/audit") if packet["name"] == "audit_event"]
        assert any(item.get("action") == "chart.read" and item.get("patient_id") == ALICE for item in received), \
            f"no chart.read on the feed; got {received}"
    finally:
        client.disconnect("/audit")
    event = next(item for item in received if item.get("action") == "chart.read")
    assert set(event) == {"seq", "time", "actor_id", "actor_role", "action", "outcome", "patient_id",
                          "resource_type", "resource_id"}
    assert event["actor_role"] == "clinician" and isinstance(event["seq"], int)


@pytest.mark.parametrize("login", ["dr.chen", None])
def test_live_feed_refuses_others(portal, login):
    client = socket_client(portal.app, sign_in(portal.url, login) if login else None, "/audit")
    assert not client.is_connected("/audit")


# --------------------------------------------------------------------------- exports


def _export(session, url: str, fmt: str, **params):
    response = get_stepping_up(session, f"{url}/compliance/export", "cora", params={"format": fmt, **params})
    assert response.status_code == 200, response.text[:500]
    return response


def _header_manifest(response) -> dict:
    return json.loads(base64.b64decode(response.headers["X-Audit-Manifest"]))


def test_csv_export_parses_and_matches_its_manifest(portal, cora, chen):
    _open_alice_chart(portal, chen)
    response = _export(cora, portal.url, "csv", patient=ALICE)
    assert response.headers["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert rows and all(row["patient_id"] == ALICE for row in rows)
    manifest = _header_manifest(response)
    assert manifest["format"] == "csv" and manifest["count"] == len(rows) and manifest["signature"]

    sidecar = get_stepping_up(cora, f"{portal.url}/compliance/export/manifest", "cora",
                              params={"format": "csv", "patient": ALICE, "through": response.headers["X-Audit-Through"]})
    assert sidecar.status_code == 200
    assert sidecar.json()["digest"] == manifest["digest"] and sidecar.json()["count"] == len(rows)


def test_jsonl_export_verifies_and_detects_an_edit(portal, cora, tmp_path):
    response = _export(cora, portal.url, "jsonl")
    path = tmp_path / "export.jsonl"
    path.write_bytes(response.content)
    lines = path.read_text().splitlines(keepends=True)
    assert json.loads(lines[0])["type"] == "export" and json.loads(lines[-1])["type"] == "manifest"

    verified = subprocess.run([sys.executable, "-m", "audit", "verify", str(path)], check=False, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: export intact")

    entry_line = next(i for i, line in enumerate(lines) if '"chart.read"' in line)
    lines[entry_line] = lines[entry_line].replace('"chart.read"', '"chart.list"', 1)
    path.write_text("".join(lines))
    tampered = subprocess.run([sys.executable, "-m", "audit", "verify", str(path)], check=False, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert tampered.stdout.startswith("FAILED: edited")


def test_exports_verify_against_the_pinned_public_key_only(portal, cora, tmp_path):
    page = cora.get(portal.url + "/compliance/integrity", timeout=10).text
    pem = cora.get(portal.url + "/compliance/integrity/public-key.pem", timeout=10)
    assert pem.status_code == 200 and pem.content.startswith(b"-----BEGIN PUBLIC KEY-----")
    (tmp_path / "portal.pub").write_bytes(pem.content)
    export = tmp_path / "export.jsonl"
    export.write_bytes(_export(cora, portal.url, "jsonl").content)
    pinned = subprocess.run([sys.executable, "-m", "audit", "verify", str(export), "--public-key",
                             str(tmp_path / "portal.pub")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "self-asserted" not in pinned.stdout + pinned.stderr
    other = tmp_path / "other.pem"
    subprocess.run([sys.executable, "-m", "audit", "keygen", "-o", str(other)], cwd=ROOT, check=True, timeout=60)
    forged_key = subprocess.run([sys.executable, "-m", "audit", "verify", str(export), "--public-key",
                                 f"{other}.pub"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert forged_key.returncode == 1
    assert 'data-testid="key-id"' in page


def test_an_export_never_reaches_past_the_current_head(portal, cora, tmp_path):
    response = _export(cora, portal.url, "jsonl", through="999999")
    through = int(response.headers["X-Audit-Through"])
    lines = [json.loads(line) for line in response.text.splitlines()]
    entries = [line for line in lines if line["type"] == "entry"]
    assert entries and max(entry["seq"] for entry in entries) <= through < 999999
    assert lines[-1]["type"] == "manifest" and lines[-1]["count"] == len(entries)


def _audit_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "verify", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def _pinned_key(portal, cora, tmp_path) -> str:
    pem = tmp_path / "audit-public-key.pem"
    pem.write_bytes(cora.get(portal.url + "/compliance/integrity/public-key.pem", timeout=10).content)
    return str(pem)


@pytest.mark.parametrize("fmt", ["csv", "fhir"])
def test_csv_and_fhir_downloads_verify_offline_with_their_manifest(portal, cora, chen, tmp_path, fmt):
    """Saved from the console: the body, and the manifest from the X-Audit-Manifest header or its own endpoint."""
    _open_alice_chart(portal, chen)
    key = _pinned_key(portal, cora, tmp_path)
    response = _export(cora, portal.url, fmt)
    export = tmp_path / f"export.{fmt}"
    export.write_bytes(response.content)
    header = tmp_path / "manifest-header.txt"
    header.write_text(response.headers["X-Audit-Manifest"])
    from_header = _audit_verify(str(export), "--public-key", key, "--manifest", str(header))
    assert from_header.returncode == 0, from_header.stdout + from_header.stderr
    assert from_header.stdout.strip() == f"OK: export intact ({_header_manifest(response)['count']} entries, 1 signatures)"

    sidecar = get_stepping_up(cora, f"{portal.url}/compliance/export/manifest", "cora",
                              params={"format": fmt, "through": response.headers["X-Audit-Through"]})
    Path(f"{export}.manifest.json").write_bytes(sidecar.content)
    beside = _audit_verify(str(export), "--public-key", key)
    assert beside.returncode == 0, beside.stdout + beside.stderr

    export.write_bytes(response.content.replace(b"chart.read", b"chart.list", 1))
    tampered = _audit_verify(str(export), "--public-key", key)
    assert tampered.returncode == 1 and tampered.stdout.startswith("FAILED: edited"), tampered.stdout


def test_fhir_export_lines_are_valid_audit_events(portal, cora):
    response = _export(cora, portal.url, "fhir", action="chart")
    lines = [line for line in response.text.splitlines() if line]
    assert lines and len(lines) == _header_manifest(response)["count"]
    for line in lines:
        resource = AuditEvent.model_validate_json(line)
        assert resource.subtype[0].code.startswith("chart")


def test_each_export_is_audited_with_format_and_count(portal, cora):
    before = _export(cora, portal.url, "csv", outcome="denied")
    count = _header_manifest(before)["count"]
    exports = _events(cora, portal.url, action="audit.export")["events"]
    latest = exports[0]["details"]
    assert latest["format"] == "csv" and latest["count"] == count and "outcome=denied" in latest["filter"]
    assert {"csv", "jsonl", "fhir"} <= {event["details"].get("format") for event in exports}
    # the export event is recorded before the body streams, so it is not part of its own export
    assert exports[0]["seq"] > int(before.headers["X-Audit-Through"])


def test_export_with_unknown_format_is_400(portal, cora):
    assert get_stepping_up(cora, f"{portal.url}/compliance/export", "cora", params={"format": "xml"}).status_code == 400


# --------------------------------------------------------------------------- integrity and CLI


def test_verify_now_records_and_shows_the_result(portal, cora):
    page = cora.get(f"{portal.url}/compliance/integrity", timeout=10)
    assert page.status_code == 200
    result = cora.post(f"{portal.url}/compliance/integrity/verify", timeout=60,
                       data={"csrf_token": _hidden_csrf(page.text.split("Verify now", 1)[1])})
    assert result.status_code == 200 and result.url.endswith("/compliance/integrity")
    assert 'data-integrity="ok"' in result.text and "Cora Whitfield" in result.text
    verifications = _events(cora, portal.url, action="audit.verify", outcome="allowed")["events"]
    assert verifications[0]["details"]["ok"] is True and verifications[0]["details"]["entries"] > 0


def _flask(portal, *args: str) -> subprocess.CompletedProcess:
    """`flask --app portal <args>`, through Flask's CLI runner on the in-process app."""
    with portal.app.app_context():  # as `flask` (FlaskGroup) gives every command
        result = portal.app.test_cli_runner().invoke(args=list(args))
    return subprocess.CompletedProcess(["flask", *args], result.exit_code, result.stdout, result.stderr)


def test_cli_verify_and_export(portal, cora, tmp_path):
    verified = _flask(portal, "audit-verify")  # the console verified the log before: only what is new since
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: intact since checkpoint") and "mode: incremental" in verified.stdout
    full = _flask(portal, "audit-verify", "--full")
    assert full.returncode == 0 and full.stdout.startswith("OK: log intact"), full.stdout + full.stderr
    assert "mode: full" in full.stdout

    output = tmp_path / "audit.csv"
    exported = _flask(portal, "audit-export", "--format", "csv", "--output", str(output), "--patient", ALICE)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    rows = list(csv.DictReader(output.open(newline="")))
    assert f"exported {len(rows)} events" in exported.stdout and rows
    manifest = json.loads((tmp_path / "audit.csv.manifest.json").read_text())
    assert manifest["count"] == len(rows) and manifest["format"] == "csv"
    key = _pinned_key(portal, cora, tmp_path)
    for fmt, path in (("csv", output), ("fhir", tmp_path / "audit.ndjson")):
        if fmt == "fhir":
            assert _flask(portal, "audit-export", "--format", "fhir", "--output", str(path)).returncode == 0
        checked = _audit_verify(str(path), "--public-key", key)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("OK: export intact"), checked.stdout

    jsonl = tmp_path / "audit.jsonl"
    assert _flask(portal, "audit-export", "--output", str(jsonl)).returncode == 0
    checked = subprocess.run([sys.executable, "-m", "audit", "verify", str(jsonl)], check=False, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    operator = _events(cora, portal.url, actor="", action="audit.")["events"]
    assert any(event["actor_role"] == "operator" and event["action"] == "audit.verify" for event in operator)
    assert any(event["actor_role"] == "operator" and event["details"].get("destination") == "file"
               for event in operator)


# --------------------------------------------------------------------------- the patient's view


def test_patient_sees_who_viewed_their_chart(portal, chen):
    _open_alice_chart(portal, chen)
    alice = sign_in(portal.url, "alice")
    assert alice.get(f"{portal.url}/chart", timeout=10).status_code == 200
    page = alice.get(f"{portal.url}/chart/access-log", timeout=10)
    assert page.status_code == 200
    assert "Dr. Mei Chen" in page.text
    assert "Alice Moreau</td>" not in page.text  # her own visits are not listed
    reyes = sign_in(portal.url, "dr.reyes")
    refused = reyes.get(f"{portal.url}/patients/{ALICE}", timeout=10)
    if refused.status_code == 403:  # no grant left open by an earlier test
        break_glass(reyes, portal.url, ALICE, "Collapsed in clinic, checking medications", "dr.reyes")
    assert reyes.get(f"{portal.url}/patients/{ALICE}", timeout=10).status_code == 200
    page = alice.get(f"{portal.url}/chart/access-log", timeout=10).text
    assert re.search(r'<tr class="flagged">\s*<td>[^<]+</td><td>Dr\. Ana Reyes</td>', page)
    assert "Emergency access" in page
