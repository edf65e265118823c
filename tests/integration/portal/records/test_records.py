"""Charts: who sees what, bad input, notes, break-glass, FHIR, and the audit trail it leaves.

Most tests run in process (tests/support/harness.py) on SQLite and PostgreSQL; break-glass (a fresh sign-in at
the provider), raw bytes on the socket, a tampered ciphertext and two workers stay on real ``run.py`` processes."""
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle

from tests.support.audit_log import audit_rows
from tests.support.portal_server import (
    another_worker,
    break_glass,
    cookie_header,
    csrf_token,
    raw_request,
    running_portal,
    sign_in,
    sign_in_again,
)
from tests.support.seed import ALICE, ALICE_MRN, BOB, BOB_MRN, seeded_mrn


@pytest.fixture(scope="module")
def portal(portal_on_each_database):
    return portal_on_each_database


@pytest.fixture
def harness_app(harness_app_on_each_database):
    return harness_app_on_each_database


@pytest.fixture(scope="module")
def sessions(portal):
    return {login: sign_in(portal.url, login) for login in ("alice", "dr.reyes")}


@pytest.fixture
def signed_in(login_as):
    return {login: login_as(login) for login in ("alice", "dr.chen", "dr.reyes", "cora")}



def test_patient_reads_their_own_chart(db, signed_in):
    page = signed_in["alice"].get("/chart", timeout=10)
    assert page.status_code == 200
    assert "Alice Moreau" in page.text and ALICE_MRN in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert audit_rows(db, action="chart.read", patient_id=ALICE, outcome="allowed")


def test_patient_cannot_reach_another_chart_by_page_api_or_fhir(db, signed_in):
    for path in (f"/patients/{BOB}", f"/api/v1/patients/{BOB}", f"/api/v1/patients/{BOB}/results",
                 f"/patients/{BOB}/fhir", f"/api/v1/patients/{BOB}/fhir"):
        response = signed_in["alice"].get(path, timeout=10)
        assert response.status_code == 404, path
        assert "Lindqvist" not in response.text
    assert signed_in["alice"].get(f"/api/v1/patients/{BOB}", timeout=10).json() == {
        "error": {"code": "not_found", "message": "There is no such record."}}
    denied = audit_rows(db, actor_role="patient", patient_id=BOB, outcome="denied")
    assert len(denied) >= 5 and denied[0]["reason"] == "not the patient's own chart"


def test_no_request_value_can_keep_an_access_attempt_out_of_the_audit_log(portal, sessions):
    """PostgreSQL refuses NUL in text: a user agent carrying one must still be recorded, escaped."""
    bob = sign_in(portal.url, "bob")
    hostile = {"User-Agent": b"probe\x00\x01\x7f", "X-Request-ID": b"req-\x00-0123456789"}
    status = raw_request(portal.url, "GET", f"/api/v1/patients/{ALICE}", {**hostile, "Cookie": cookie_header(bob)})
    assert status == 404  # concealed, as for any other chart that is not bob's
    refused = audit_rows(portal.database, action="chart.read", patient_id=ALICE, actor_role="patient", outcome="denied")
    assert refused[-1]["user_agent"] == "probe\\x00\\x01\\x7f"

    forged_callback = raw_request(portal.url, "GET", "/auth/callback?code=forged&state=forged", hostile)
    assert forged_callback == 400
    assert audit_rows(portal.database, action="signin.failure", user_agent="probe\\x00\\x01\\x7f")
    forged_logout = raw_request(portal.url, "POST", "/auth/backchannel-logout",
                                {**hostile, "Content-Type": b"application/x-www-form-urlencoded"}, b"logout_token=x")
    assert forged_logout == 400
    assert audit_rows(portal.database, action="signout.backchannel", outcome="denied", user_agent="probe\\x00\\x01\\x7f")


def test_malformed_ids_are_a_400(db, signed_in):
    response = signed_in["dr.chen"].get("/api/v1/patients/not-a-uuid", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_id"
    refused = audit_rows(db, action="request.refused", reason="malformed_id")
    assert refused and "not-a-uuid" not in str(dict(refused[-1]))


def test_clinician_on_the_care_team_reads_the_chart_and_api(db, signed_in):
    assert "Alice Moreau" in signed_in["dr.chen"].get(f"/patients/{ALICE}", timeout=10).text
    results = signed_in["dr.chen"].get(f"/api/v1/patients/{ALICE}/results", timeout=10).json()["results"]
    assert results and {"name", "value", "flag", "abnormal"} <= results[0].keys()
    assert audit_rows(db, action="chart.read", resource_type="results", patient_id=ALICE)


def test_compliance_sees_no_clinical_content(db, signed_in):
    response = signed_in["cora"].get(f"/patients/{ALICE}", timeout=10)
    assert response.status_code == 403 and "Moreau" not in response.text


def test_search_by_mrn_name_and_birth_date_through_blind_indexes(db, signed_in):
    chen = signed_in["dr.chen"]
    by_mrn = chen.get("/api/v1/patients", params={"mrn": "rc 100001"}, timeout=10).json()["patients"]
    assert [p["id"] for p in by_mrn] == [ALICE]
    assert set(by_mrn[0]) == {"id", "mrn", "given_name", "family_name", "birth_date"}, "no contact details in search"
    assert audit_rows(db, action="patient.search.hit", patient_id=ALICE)
    by_name = chen.get("/api/v1/patients", params={"name": "  MOREAU "}, timeout=10).json()["patients"]
    assert ALICE in [p["id"] for p in by_name]
    dob = by_mrn[0]["birth_date"]
    by_dob = chen.get("/api/v1/patients", params={"birth_date": dob}, timeout=10).json()["patients"]
    assert ALICE in [p["id"] for p in by_dob]
    bad = chen.get("/api/v1/patients", params={"birth_date": "31/12/1980"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_birth_date"
    page = chen.get("/patients/search", params={"mrn": ALICE_MRN}, timeout=10)
    assert "1 patient found" in page.text
    counts = [r["details"] for r in audit_rows(db, action="patient.search.results")]
    assert '"count": 1' in counts[0] or '"count":1' in counts[0]


def test_notes_are_written_once_per_submission_and_validated(db, signed_in):
    chen = signed_in["dr.chen"]
    chart_url = f"/patients/{ALICE}"
    page = chen.get(chart_url, timeout=10).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    submission = re.search(r'name="submission_id" value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "submission_id": submission, "title": "Review", "text": "<script>alert(1)</script> BP 128/80"}
    for _ in range(2):
        assert chen.post(chart_url + "/notes", data=form, timeout=10).status_code == 200
    chart = chen.get(chart_url, timeout=10).text
    assert chart.count("&lt;script&gt;alert(1)&lt;/script&gt; BP 128/80") == 1
    assert "<script>alert(1)</script>" not in chart
    too_long = chen.post(chart_url + "/notes", data={**form, "submission_id": "", "text": "x" * 20_001}, timeout=10)
    assert too_long.status_code == 400
    missing_csrf = chen.post(chart_url + "/notes", data={"title": "t", "text": "t"}, timeout=10)
    assert missing_csrf.status_code == 400
    assert len(audit_rows(db, action="chart.note.created", patient_id=ALICE)) == 1


def test_a_note_that_is_not_text_is_a_400_not_a_500(db, signed_in):
    chen = signed_in["dr.chen"]
    url = f"/api/v1/patients/{ALICE}/notes"
    headers = {"X-CSRFToken": csrf_token(chen, "/"), "Content-Type": "application/json"}
    for body in ('{"title": "Lone \\ud800", "text": "surrogate"}', '{"title": "NUL", "text": "a\\u0000b"}'):
        response = chen.post(url, data=body, headers=headers, timeout=10)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_request"
    # A browser form cannot carry those characters at all: its broken bytes arrive as no field.
    page = chen.get(f"/patients/{ALICE}", timeout=10).text
    form = "csrf_token=" + re.search(r'name="csrf-token" content="([^"]+)"', page).group(1) + "&title=x&text="
    broken = chen.post(f"/patients/{ALICE}/notes", data=form.encode() + b"\xed\xa0\x80", timeout=10,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert broken.status_code == 400
    refused = audit_rows(db, action="request.refused", reason="bad_request")
    assert len(refused) >= 2


@pytest.mark.parametrize("body", ['{"title": null, "text": null}', '{"title": ["a"], "text": {"b": 1}}',
                                  '{"title": "t", "text": "x", "submission_id": 7}', "[" * 5000 + "]" * 5000,
                                  '"just a string"', "not json"])
def test_a_note_body_that_is_not_an_object_of_texts_is_a_400(db, signed_in, body):
    chen = signed_in["dr.chen"]
    response = chen.post(f"/api/v1/patients/{ALICE}/notes", data=body, timeout=10,
                         headers={"X-CSRFToken": csrf_token(chen, "/"), "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_json", response.text[:200]


def test_patients_cannot_write_notes(db, signed_in):
    token = csrf_token(signed_in["alice"], "/chart")
    response = signed_in["alice"].post(f"/api/v1/patients/{ALICE}/notes", json={"title": "t", "text": "t"},
                                      headers={"X-CSRFToken": token}, timeout=10)
    assert response.status_code == 403


def test_break_glass_opens_a_refused_chart_for_a_reason(portal, sessions):
    reyes = sessions["dr.reyes"]
    refused = reyes.get(portal.url + f"/patients/{ALICE}", timeout=10)
    assert refused.status_code == 403 and "break-glass" in refused.text and "Moreau" not in refused.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', refused.text).group(1)
    short = reyes.post(portal.url + f"/patients/{ALICE}/break-glass", data={"csrf_token": token, "reason": "x"}, timeout=10)
    assert short.status_code == 400
    for hidden in ("Unconscious in the emergency \u202edepartment", "Unconscious in the emergency\x1b[2J department",
                   "\u3164" * 12, "\u2800" * 12, "\u0301" * 12):
        refused_reason = reyes.post(portal.url + f"/patients/{ALICE}/break-glass",
                                    data={"csrf_token": token, "reason": hidden}, timeout=10)
        assert refused_reason.status_code == 400 and ("plain text" in refused_reason.text or
                                                      "in words" in refused_reason.text)
    opened = break_glass(reyes, portal.url, ALICE, "Unconscious in the emergency department", "dr.reyes")
    assert opened.status_code == 200 and "Alice Moreau" in opened.text and "break-glass" in opened.text
    granted = audit_rows(portal.database, action="break_glass.granted", patient_id=ALICE)
    assert granted and "Unconscious" not in str(dict(granted[0]))
    reads = audit_rows(portal.database, action="chart.read", patient_id=ALICE, reason="break-glass access")
    assert reads


def test_a_break_glass_sign_in_is_good_for_that_patient_only(portal):
    """The fresh sign-in and the typed reason belong to the chart they were given for."""
    okafor = sign_in(portal.url, "dr.okafor")
    token = csrf_token(okafor, portal.url + "/")
    reason = "Found collapsed in the car park, unresponsive"
    asked = okafor.post(portal.url + f"/patients/{ALICE}/break-glass", data={"csrf_token": token, "reason": reason},
                        timeout=10)
    confirm = sign_in_again(okafor, asked, "dr.okafor")
    assert 'id="step-up-confirmed"' in confirm.text and reason in confirm.text

    other = okafor.get(portal.url + f"/patients/{BOB}/break-glass", timeout=10)
    assert 'id="step-up-confirmed"' not in other.text and reason not in other.text
    elsewhere = okafor.post(portal.url + f"/patients/{BOB}/break-glass", allow_redirects=False, timeout=10,
                            data={"csrf_token": token, "reason": "Another emergency entirely, sign in again"})
    assert elsewhere.status_code == 302 and elsewhere.headers["Location"].startswith("/auth/step-up")
    assert not audit_rows(portal.database, action="break_glass.granted", patient_id=BOB)


def test_opening_the_break_glass_form_alone_puts_nothing_on_record(db, login_as):
    """A link to the form (in an email, say) must not make a clinician look as if they sought access."""
    chen = login_as("dr.chen")
    before = len(audit_rows(db, action="break_glass.open"))
    assert chen.get(f"/patients/{BOB}/break-glass", timeout=10).status_code == 200
    assert len(audit_rows(db, action="break_glass.open")) == before
    alice = login_as("alice")
    assert alice.get(f"/patients/{BOB}/break-glass", timeout=10).status_code == 403
    assert audit_rows(db, action="break_glass.open", outcome="denied")


def test_fhir_bundle_validates_as_r4(db, signed_in):
    response = signed_in["alice"].get("/chart/fhir", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    kinds = {entry.resource.__resource_type__ for entry in bundle.entry}
    assert {"Patient", "Condition", "MedicationRequest", "Observation", "DocumentReference"} <= kinds
    assert audit_rows(db, action="chart.export", patient_id=ALICE, outcome="allowed")


def test_a_tampered_ciphertext_fails_loudly_and_is_counted(portal, sessions):
    engine = sa.create_engine(portal.env["PORTAL_DATABASE_URL"])
    with engine.begin() as conn:
        original = conn.execute(sa.text("SELECT given_name FROM patient WHERE id = :id"), {"id": ALICE}).scalar_one()
        borrowed = conn.execute(sa.text("SELECT given_name FROM patient WHERE id = :id"), {"id": BOB}).scalar_one()
        conn.execute(sa.text("UPDATE patient SET given_name = :value WHERE id = :id"), {"value": borrowed, "id": ALICE})
    try:
        response = sessions["alice"].get(portal.url + "/chart", timeout=10)
        assert response.status_code == 500 and "could not be decrypted" in response.text
        assert "Bob" not in response.text and "Moreau" not in response.text
        metrics = sessions["alice"].get(portal.url + "/metrics", headers={"Authorization": "Bearer test-metrics-token"},
                                        timeout=10).text
        assert "portal_decrypt_failures_total 1.0" in metrics
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE patient SET given_name = :value WHERE id = :id"), {"value": original, "id": ALICE})
        engine.dispose()
    assert sessions["alice"].get(portal.url + "/chart", timeout=10).status_code == 200


def test_a_reused_submission_id_never_reveals_another_patients_note(db, signed_in):
    chen, reyes = signed_in["dr.chen"], signed_in["dr.reyes"]
    token = csrf_token(chen, "/clinician")
    submission = "6f1d3c2a-0000-4000-8000-00000000beef"
    secret = {"title": "Sensitive", "text": "private finding for Alice", "submission_id": submission}
    first = chen.post(f"/api/v1/patients/{ALICE}/notes", json=secret, headers={"X-CSRFToken": token},
                      timeout=10)
    assert first.status_code == 201
    bob_chart = f"/api/v1/patients/{BOB}/notes"
    again = chen.post(bob_chart, json={**secret, "text": "other"}, headers={"X-CSRFToken": token},
                      timeout=10)
    assert again.status_code == 409 and "private finding" not in again.text
    reyes_token = csrf_token(reyes, "/clinician")
    other_author = reyes.post(f"/api/v1/patients/{BOB}/notes", json={**secret, "text": "mine"},
                              headers={"X-CSRFToken": reyes_token}, timeout=10)
    assert other_author.status_code == 403 and "private finding" not in other_author.text


def test_searches_show_a_bounded_number_of_patients_per_hour_and_bulk_listing_is_flagged(db, login_as, configure):
    """Surname after surname, a clinician outside every care team could list the clinic: searches stop at the
    hourly limit of distinct patients, the refusal is audited, and the listing shows under bulk reads."""
    configure(search_distinct_patients_per_hour=22)
    reyes, cora = login_as("dr.reyes"), login_as("cora")
    search = "/api/v1/patients"
    for number in range(100001, 100023):
        assert reyes.get(search, params={"mrn": f"RC-{number}"}, timeout=10).status_code == 200
    refused = reyes.get(search, params={"mrn": seeded_mrn(22)}, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "search_limit"
    assert "at most 22 different patients in an hour" in refused.json()["error"]["message"]
    assert reyes.get(search, params={"mrn": ALICE_MRN}, timeout=10).json()["patients"]  # listed before: free
    page = reyes.get("/patients/search", params={"mrn": seeded_mrn(23)}, timeout=10)
    assert page.status_code == 429 and "at most 22 different patients in an hour" in page.text
    assert seeded_mrn(23) not in page.text.replace(f'value="{seeded_mrn(23)}"', "")

    denials = audit_rows(db, action="patient.search", outcome="denied")
    assert [row["reason"] for row in denials] == ["hourly search limit reached"] * 2
    assert len({row["patient_id"] for row in audit_rows(db, action="patient.search.hit")}) == 22
    flags = cora.get("/compliance/flags", timeout=10).text
    bulk = flags[flags.index('id="bulk-reads"'):]
    bulk = bulk[:bulk.index("</section>")]
    assert "Dr. Ana Reyes" in bulk and "<td>22</td>" in bulk


@pytest.mark.postgres
def test_the_hourly_search_limit_holds_against_simultaneous_searches_on_two_workers(tmp_path, postgres_url):
    """Twenty searches sent at once, half to each worker, each for a different patient: exactly the limit's
    worth are answered and the rest refused, because the count of patients already listed is read and
    extended by one search at a time per user."""
    with running_portal(tmp_path, postgres_url, patients=24, PORTAL_SEARCH_DISTINCT_PATIENTS_PER_HOUR="5") as first:
        with another_worker(first) as second:
            reyes = sign_in(first.url, "dr.reyes")

            def search(number: int) -> int:
                server = (first, second)[number % 2]
                return reyes.get(server.url + "/api/v1/patients", params={"mrn": f"RC-{100001 + number}"},
                                 timeout=30).status_code

            with ThreadPoolExecutor(max_workers=20) as pool:
                statuses = list(pool.map(search, range(20)))
            assert sorted(statuses) == [200] * 5 + [429] * 15
            assert len({row["patient_id"] for row in audit_rows(first.database, action="patient.search.hit")}) == 5


def test_a_compliance_officers_mrn_lookup_is_a_search_within_the_hourly_limit(db, login_as, configure):
    """Looking a patient up by MRN for an accounting of disclosures tells the officer the patient exists:
    it is audited as a search hit the patient sees, and counts towards the same hourly limit."""
    configure(search_distinct_patients_per_hour=2)
    cora = login_as("cora")
    for mrn in (ALICE_MRN, BOB_MRN, ALICE_MRN):
        assert cora.get("/compliance/disclosures", params={"mrn": mrn}, timeout=30).status_code == 200
    refused = cora.get("/compliance/disclosures", params={"mrn": seeded_mrn(2)}, timeout=30)
    assert refused.status_code == 429 and "at most 2 different patients in an hour" in refused.text
    hits = audit_rows(db, action="patient.search.hit")
    assert {row["patient_id"] for row in hits} == {ALICE, BOB}
    assert {row["patient_id"] for row in audit_rows(db, action="chart.disclosures")} <= {ALICE, BOB}  # not RC-100003
