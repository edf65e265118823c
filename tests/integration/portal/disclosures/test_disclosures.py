"""The accounting of disclosures on SQLite and PostgreSQL: the report lists exactly the accesses the audit log
holds for the chart (compared seq by seq with the audit_entry table), as a page, JSON, CSV and PDF; refusals are
audited; a tampered log stops the report.

In process (tests/support/harness.py), signed in through the development provider's forms, one transaction per
module; the report over real HTTP is in test_openapi.py (the API) and the browser journeys (tests/e2e)."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from urllib.parse import urljoin

import pytest
import sqlalchemy as sa

from audit import install_append_only_guard, remove_append_only_guard
from tests.support.audit_log import audit_rows
from tests.support.database import writing
from tests.support.portal_server import DEMO_PASSWORDS, ROOT, parse_form, sign_in
from tests.support.seed import ALICE, ALICE_MRN

BREAK_GLASS_REASON = "Unconscious in the emergency department, allergies unknown"
UNVERIFIED = "The audit log failed verification; the report cannot be issued. Compliance has been alerted."


@pytest.fixture(scope="module")
def portal(portal_in_process_for_module_on_each_database):
    return portal_in_process_for_module_on_each_database


@pytest.fixture(scope="module")
def sessions(portal):
    return {login: sign_in(portal.url, login) for login in ("alice", "bob", "dr.chen", "dr.okafor", "dr.reyes", "cora")}


@pytest.fixture(scope="module")
def accesses(portal, sessions):
    """Clinicians read Alice's chart, search for her and break the glass; Alice reads her own chart."""
    chen, okafor, reyes, alice = (sessions[login] for login in ("dr.chen", "dr.okafor", "dr.reyes", "alice"))
    for path in (f"/patients/{ALICE}", f"/api/v1/patients/{ALICE}/results", f"/api/v1/patients/{ALICE}/medications"):
        assert chen.get(portal.url + path, timeout=10).status_code == 200, path
    assert chen.get(portal.url + "/api/v1/patients", params={"mrn": ALICE_MRN}, timeout=10).json()["patients"]
    assert okafor.get(portal.url + f"/patients/{ALICE}", timeout=10).status_code == 200
    open_break_glass(portal, reyes, "dr.reyes", ALICE, BREAK_GLASS_REASON)
    assert reyes.get(portal.url + f"/api/v1/patients/{ALICE}/allergies", timeout=10).status_code == 200
    for path in ("/chart", "/chart/access-log", "/api/v1/me/chart"):
        assert alice.get(portal.url + path, timeout=10).status_code == 200, path
    return {"alice_id": alice.get(portal.url + "/api/v1/me", timeout=10).json()["id"]}


def open_break_glass(portal, session, login: str, patient_id: str, reason: str) -> None:
    """Break the glass as a browser would: the refusal's form, then any fresh sign-in and confirmation asked for."""
    refused = session.get(f"{portal.url}/patients/{patient_id}", timeout=10)
    assert refused.status_code == 403
    response = session.post(f"{portal.url}/patients/{patient_id}/break-glass",
                            data={"csrf_token": _csrf(refused.text), "reason": reason}, timeout=10)
    for _ in range(3):
        if response.url.rstrip("/").endswith(f"/patients/{patient_id}") and response.status_code == 200:
            return
        if "/devidp/" in response.url:  # step-up: sign in again at the provider
            form = parse_form(response.text)
            form.fields.update(login=login, password=DEMO_PASSWORDS[login])
            response = session.post(urljoin(response.url, form.action or response.url), data=form.fields, timeout=10)
        else:  # the confirmation page, with the reason carried over
            response = session.post(f"{portal.url}/patients/{patient_id}/break-glass",
                                    data={"csrf_token": _csrf(response.text), "reason": reason}, timeout=10)
    raise AssertionError(f"break-glass did not open the chart: {response.status_code} {response.url}")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def expected_seqs(portal, alice_id: str, through: int) -> list[int]:
    """Computed from the audit_entry table, not by the portal: allowed, about Alice, by anyone but Alice."""
    rows = audit_rows(portal.database, patient_id=ALICE, outcome="allowed")
    return [row["seq"] for row in rows if row["seq"] <= through and row["actor_id"] != alice_id]


def disclosure_rows(portal, **equals) -> list[dict]:
    return audit_rows(portal.database, action="chart.disclosures", **equals)


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _api(portal, session, patient_id: str = ALICE, **params):
    return session.get(f"{portal.url}/api/v1/patients/{patient_id}/disclosures", params=params, timeout=30)


# --------------------------------------------------------------------------- the report


def test_the_patients_report_lists_exactly_the_accesses_in_the_audit_log(portal, sessions, accesses):
    response = _api(portal, sessions["alice"])
    assert response.status_code == 200, response.text
    report = response.json()
    seqs = [line["seq"] for line in report["lines"]]
    assert seqs == expected_seqs(portal, accesses["alice_id"], report["proof"]["tree_size"])
    assert report["count"] == len(seqs) and len(seqs) >= 8
    assert report["patient"] == {"id": ALICE, "name": "Alice Moreau", "mrn": ALICE_MRN}
    today = _today()
    assert report["end"] == today and report["start"][:4] == str(int(today[:4]) - 6), "the last six years by default"
    whats = {line["what"] for line in report["lines"]}
    assert {"Read chart — whole chart", "Read chart — results", "Search result", "Break-glass access opened"} <= whats
    assert {line["who"] for line in report["lines"]} >= {"Dr. Mei Chen", "Dr. Tunde Okafor", "Dr. Ana Reyes"}
    assert "Alice Moreau" not in {line["who"] for line in report["lines"]}, "the patient's own reads are no disclosures"
    chen_read = next(line for line in report["lines"] if line["what"] == "Read chart — results")
    assert (chen_read["who"], chen_read["role"], chen_read["purpose"]) == ("Dr. Mei Chen", "Clinician", "care team member")


def test_break_glass_lines_show_the_typed_reason(portal, sessions, accesses):
    lines = _api(portal, sessions["alice"]).json()["lines"]
    emergency = [line for line in lines if line["break_glass"]]
    assert {line["what"] for line in emergency} >= {"Break-glass access opened", "Read chart — whole chart",
                                                    "Read chart — allergies"}
    assert all(line["who"] == "Dr. Ana Reyes" and line["purpose"] == BREAK_GLASS_REASON for line in emergency)
    granted = audit_rows(portal.database, action="break_glass.granted", patient_id=ALICE)
    assert granted and "emergency department" not in str(granted), "the audit log itself holds no typed reason"


def test_the_patient_page_shows_the_report_with_downloads(portal, sessions, accesses):
    page = sessions["alice"].get(portal.url + "/me/disclosures", timeout=30)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    tree_size = int(re.search(r"data-tree-size>(\d+)<", page.text).group(1))
    page_seqs = [int(seq) for seq in re.findall(r'<tr class="[^"]*" data-seq="(\d+)"', page.text)]
    assert page_seqs == expected_seqs(portal, accesses["alice_id"], tree_size)
    assert "Alice Moreau" in page.text and ALICE_MRN in page.text and BREAK_GLASS_REASON in page.text
    assert 'scope="col"' in page.text and 'aria-labelledby="disclosures-caption"' in page.text
    assert "<script>" not in page.text and "style=" not in page.text
    assert "format=csv" in page.text and "format=pdf" in page.text and "format=json" in page.text
    access_log = sessions["alice"].get(portal.url + "/chart/access-log", timeout=10).text
    assert 'href="/me/disclosures"' in access_log


def test_a_period_without_accesses_is_empty(portal, sessions, accesses):
    yesterday = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    report = _api(portal, sessions["alice"], start=yesterday, end=yesterday).json()
    assert report["lines"] == [] and report["count"] == 0 and (report["start"], report["end"]) == (yesterday, yesterday)


def test_csv_and_pdf_downloads_carry_the_same_lines_and_verification(portal, sessions, accesses):
    alice = sessions["alice"]
    download = alice.get(portal.url + "/me/disclosures", params={"format": "csv"}, timeout=30)
    assert download.status_code == 200 and download.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["X-Report-Digest"] == hashlib.sha256(download.content).hexdigest()
    tree_size = int(download.headers["X-Audit-Tree-Size"])
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8"))))
    assert [int(row["audit_seq"]) for row in rows] == expected_seqs(portal, accesses["alice_id"], tree_size)
    assert int(download.headers["X-Report-Lines"]) == len(rows)
    reasons = {row["purpose"] for row in rows if row["break_glass"] == "yes"}
    assert reasons == {BREAK_GLASS_REASON}

    pdf = alice.get(portal.url + "/me/disclosures", params={"format": "pdf"}, timeout=30)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Content-Disposition"].startswith("attachment;") and pdf.content.startswith(b"%PDF")
    text = pdf_text(pdf.content)
    assert pdf.headers["X-Report-Digest"] in text and "Alice Moreau" in text
    assert int(pdf.headers["X-Report-Lines"]) >= len(rows)


def pdf_text(pdf: bytes) -> str:
    """The page content streams of a reportlab PDF (ASCII85 over Flate), enough to find the printed strings."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            text.append(zlib.decompress(base64.a85decode(stream.strip().removesuffix(b"~>"))).decode("latin-1"))
        except (ValueError, zlib.error):
            continue
    return "".join(text)


def test_the_compliance_officer_finds_the_patient_by_mrn_and_sees_the_same_accesses(portal, sessions, accesses):
    cora = sessions["cora"]
    form = cora.get(portal.url + "/compliance/disclosures", timeout=10)
    assert form.status_code == 200 and 'name="mrn"' in form.text and 'for="d-mrn"' in form.text
    page = cora.get(portal.url + "/compliance/disclosures", params={"mrn": "rc-100001"}, timeout=30)
    assert page.status_code == 200 and "Alice Moreau" in page.text and BREAK_GLASS_REASON in page.text
    tree_size = int(re.search(r"data-tree-size>(\d+)<", page.text).group(1))
    page_seqs = [int(seq) for seq in re.findall(r'<tr class="[^"]*" data-seq="(\d+)"', page.text)]
    assert page_seqs == expected_seqs(portal, accesses["alice_id"], tree_size)
    assert f"format=csv&amp;patient={ALICE}" in page.text or f"patient={ALICE}" in page.text

    report = _api(portal, cora).json()
    assert [line["seq"] for line in report["lines"]] == expected_seqs(portal, accesses["alice_id"],
                                                                      report["proof"]["tree_size"])
    mine = {line["what"] for line in report["lines"] if line["who"] == "Cora Whitfield"}
    assert mine == {"Produced an accounting of disclosures", "Search result"}, \
        "an officer's lookup by MRN and earlier report are themselves disclosures"

    issued = disclosure_rows(portal, actor_role="compliance", outcome="allowed")
    assert issued[-1]["reason"] == "compliance review" and '"format":"json"' in issued[-1]["details"].replace(" ", "")
    assert f'"lines":{report["count"]}' in issued[-1]["details"].replace(" ", "")
    csv_download = cora.get(portal.url + "/compliance/disclosures", params={"patient": ALICE, "format": "csv"}, timeout=30)
    assert csv_download.status_code == 200 and csv_download.headers["Content-Disposition"].startswith("attachment;")


def test_every_issued_report_is_audited_with_its_format_and_line_count(portal, sessions, accesses):
    before = len(disclosure_rows(portal, outcome="allowed"))
    alice = sessions["alice"]
    for params in ({}, {"format": "csv"}, {"format": "pdf"}):
        assert alice.get(portal.url + "/me/disclosures", params=params, timeout=30).status_code == 200
    assert _api(portal, alice).status_code == 200
    rows = disclosure_rows(portal, outcome="allowed")[before:]
    assert [row["reason"] for row in rows] == ["own chart"] * 4
    details = [row["details"].replace(" ", "") for row in rows]
    for fmt, text in zip(("html", "csv", "pdf", "json"), details, strict=True):
        assert f'"format":"{fmt}"' in text and '"lines":' in text and '"range":"' in text
    assert all("Moreau" not in text and ALICE_MRN not in text for text in details), "identifiers only"


# --------------------------------------------------------------------------- refusals


def _denied_after(portal, actor_id: str, before: int) -> list[dict]:
    return disclosure_rows(portal, actor_id=actor_id, outcome="denied")[before:]


def _actor(portal, session) -> str:
    return session.get(portal.url + "/api/v1/me", timeout=10).json()["id"]


@pytest.mark.parametrize("login, patient, status, reason", [
    ("dr.chen", ALICE, 403, "requires the compliance role"),
    ("bob", ALICE, 404, "not the patient's own chart"),
    ("cora", "5e1ec7ed-0000-4000-8000-00000000dead", 404, "no such patient"),
])
def test_refusals_are_audited_once(portal, sessions, accesses, login, patient, status, reason):
    session = sessions[login]
    actor = _actor(portal, session)
    before = len(disclosure_rows(portal, actor_id=actor, outcome="denied"))
    response = _api(portal, session, patient)
    assert response.status_code == status
    assert response.json()["error"]["code"] == ("forbidden" if status == 403 else "not_found")
    assert "Moreau" not in response.text and ALICE_MRN not in response.text
    denied = _denied_after(portal, actor, before)
    assert len(denied) == 1 and denied[0]["reason"] == reason and denied[0]["patient_id"] == patient


def test_pages_refuse_the_same_way(portal, sessions, accesses):
    chen, bob, cora = sessions["dr.chen"], sessions["bob"], sessions["cora"]
    chen_id = _actor(portal, chen)
    before = len(disclosure_rows(portal, actor_id=chen_id, outcome="denied"))
    page = chen.get(portal.url + "/compliance/disclosures", params={"patient": ALICE}, timeout=10)
    assert page.status_code == 403 and "Moreau" not in page.text
    assert len(_denied_after(portal, chen_id, before)) == 1
    assert chen.get(portal.url + "/compliance/disclosures", timeout=10).status_code == 403
    assert bob.get(portal.url + "/compliance/disclosures", params={"mrn": ALICE_MRN}, timeout=10).status_code == 404
    cora_id = _actor(portal, cora)
    before = len(disclosure_rows(portal, actor_id=cora_id, outcome="denied"))
    unknown = cora.get(portal.url + "/compliance/disclosures", params={"mrn": "RC-999999"}, timeout=10)
    assert unknown.status_code == 404 and "There is no such record." in unknown.text
    assert [row["reason"] for row in _denied_after(portal, cora_id, before)] == ["no such patient"]
    clinician_page = chen.get(portal.url + "/me/disclosures", timeout=10)
    assert clinician_page.status_code == 404, "a clinician has no chart of their own"


@pytest.mark.parametrize("params, message", [
    ({"start": "2026-02-01", "end": "2026-01-01"}, "must not be after the end date"),
    ({"start": "yesterday"}, "must be a date written YYYY-MM-DD"),
    ({"end": "2999-01-01"}, "must not be in the future"),
])
def test_a_bad_period_is_a_400_with_a_clear_message(portal, sessions, accesses, params, message):
    api = _api(portal, sessions["alice"], **params)
    assert api.status_code == 400 and api.json()["error"]["code"] == "bad_range"
    assert message in api.json()["error"]["message"]
    page = sessions["alice"].get(portal.url + "/me/disclosures", params=params, timeout=10)
    assert page.status_code == 400 and message in page.text and "data-range-error" in page.text
    officer = sessions["cora"].get(portal.url + "/compliance/disclosures", params={"patient": ALICE, **params}, timeout=10)
    assert officer.status_code == 400 and message in officer.text and "Moreau" not in officer.text


def test_an_unknown_format_is_a_400(portal, sessions, accesses):
    response = sessions["alice"].get(portal.url + "/me/disclosures", params={"format": "xlsx"}, timeout=10)
    assert response.status_code == 400 and "csv, pdf or json" in response.text


def _verify_report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "verify-report", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_proof_download_verifies_offline_with_the_published_log_key(portal, sessions, accesses, tmp_path):
    """A patient downloads the CSV and its proof file; anyone with the key the Integrity page publishes checks both
    with `python -m audit verify-report`, no portal or database needed, and an edited copy is refused."""
    alice = sessions["alice"]
    csv_file, proof_file = tmp_path / "report.csv", tmp_path / "report.json"
    csv_file.write_bytes(alice.get(portal.url + "/me/disclosures", params={"format": "csv"}, timeout=30).content)
    proof = alice.get(portal.url + "/me/disclosures", params={"format": "json"}, timeout=30)
    assert proof.status_code == 200 and proof.headers["Content-Type"] == "application/json"
    assert proof.headers["Content-Disposition"].endswith('.json"')
    proof_file.write_bytes(proof.content)
    report = proof.json()
    assert [item["entry"]["seq"] for item in report["proof"]["entries"]] == [line["seq"] for line in report["lines"]]
    integrity = sessions["cora"].get(portal.url + "/compliance/integrity", timeout=10).text
    log_key = re.search(r'data-testid="log-verifier-key">([^<]+)<', integrity).group(1)
    assert report["proof"]["log_key"] == log_key

    checked = _verify_report(proof_file, "--log-key", log_key, "--csv", csv_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"OK: all {report['count']} lines are entries of the audit log")
    assert "the CSV matches the report's digest" in checked.stdout

    report["proof"]["entries"][0]["entry"]["event"]["reason"] = "quality audit"
    proof_file.write_text(json.dumps(report))
    edited = _verify_report(proof_file, "--log-key", log_key)
    assert edited.returncode == 1 and "changed after the log signed it" in edited.stderr, edited.stderr


# --------------------------------------------------------------------------- a tampered log (last: it edits the log)


def _set_reason(database, seq: int, reason: str) -> None:
    with writing(database) as conn:
        remove_append_only_guard(conn)  # an attacker with database access can do this too
        conn.execute(sa.text("UPDATE audit_entry SET reason = :reason WHERE seq = :seq"), {"reason": reason, "seq": seq})
        install_append_only_guard(conn)


def test_a_tampered_audit_log_stops_the_report(portal, sessions, accesses):
    url = portal.database
    target = next(row for row in audit_rows(url, patient_id=ALICE, action="chart.read", outcome="allowed")
                  if row["reason"] == "care team member")
    issued_before = len(disclosure_rows(portal, outcome="allowed"))
    _set_reason(url, target["seq"], "quality audit")
    try:
        api = _api(portal, sessions["alice"])
        assert api.status_code == 409 and api.json() == {"error": {"code": "audit_log_unverified", "message": UNVERIFIED}}
        for session, path, params in ((sessions["alice"], "/me/disclosures", {}),
                                      (sessions["alice"], "/me/disclosures", {"format": "csv"}),
                                      (sessions["cora"], "/compliance/disclosures", {"patient": ALICE, "format": "pdf"})):
            response = session.get(portal.url + path, params=params, timeout=30)
            assert response.status_code == 409 and UNVERIFIED in response.text, path
            assert "Moreau" not in response.text and "X-Report-Digest" not in response.headers
        assert len(disclosure_rows(portal, outcome="allowed")) == issued_before, "no report was issued"
        errors = disclosure_rows(portal, outcome="error")
        assert len(errors) == 4 and all(row["reason"] == "audit entry failed its proof" for row in errors)
        assert f'"position":{target["seq"]}' in errors[0]["details"].replace(" ", "")
    finally:
        _set_reason(url, target["seq"], target["reason"])
    assert _api(portal, sessions["alice"]).status_code == 200, "the restored log verifies again"


def test_editing_the_accounts_table_cannot_hide_an_access_from_the_patient(portal, sessions, accesses):
    """Own accesses are told apart by the signed entries (the decision's reason), not by which accounts the
    user table links to the chart today: linking a clinician's account to the chart hides nothing."""
    reyes_id = sessions["dr.reyes"].get(portal.url + "/api/v1/me", timeout=10).json()["id"]
    with writing(portal.database) as conn:
        conn.execute(sa.text("UPDATE user_account SET patient_id = :chart WHERE id = :reyes"),
                     {"chart": ALICE, "reyes": reyes_id})
    try:
        report = _api(portal, sessions["alice"]).json()
        assert any(line["break_glass"] and line["who"] == "Dr. Ana Reyes" for line in report["lines"]), report["lines"]
        assert report["count"] == len(expected_seqs(portal, accesses["alice_id"], report["proof"]["tree_size"]))
        assert "Dr. Ana Reyes" in sessions["alice"].get(portal.url + "/chart/access-log", timeout=10).text
    finally:
        with writing(portal.database) as conn:
            conn.execute(sa.text("UPDATE user_account SET patient_id = NULL WHERE id = :reyes"), {"reyes": reyes_id})
