"""The OpenAPI document of /api/v1/: a valid OpenAPI 3.1 document, complete against the routes the portal
registers, and true of what the portal answers.

Every documented operation is called, for its success and its error statuses, and each body is validated with
jsonschema against the schema the document gives for that status and media type. The calls are made with
``requests`` to the in-process portal (tests/support/harness.py: the same application, signed in through the
development provider's forms); the API over real HTTP is exercised by test_records.py, test_smart_fhir.py and the
browser journeys.
The (operation, status) pairs exercised plus the few listed in NOT_EXERCISED (with the test that covers
them) must be exactly the documented ones, so the document and this test change together.
"""
from __future__ import annotations

import re
import uuid

import pytest
import requests
from flask.cli import routes_command
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from werkzeug.routing import Map, Rule

from portal.openapi import load_document
from tests.support.portal_server import csrf_token, sign_in
from tests.support.seed import ALICE, ALICE_MRN, BOB, BOB_MRN, seeded_mrn

API = "/api/v1"
SECTIONS = ("demographics", "problems", "medications", "allergies", "results", "notes")
# Documented answers this test does not provoke, and where they are proven instead.
NOT_EXERCISED = {
    ("/api/v1/me/chart", "get", "403"): "no_chart: tests/integration/portal/auth/test_patient_link.py",
    ("/api/v1/patients/{patient_id}/disclosures", "get", "409"):
        "a tampered log: tests/integration/portal/disclosures/test_disclosures.py",
    **{(path, "get", "503"): "tests/faults/test_audit_store_failure.py, test_database_restart.py"
       for path in ("/api/v1/me/chart", "/api/v1/patients", "/api/v1/patients/{patient_id}",
                    "/api/v1/patients/{patient_id}/fhir", "/api/v1/patients/{patient_id}/{section}",
                    "/api/v1/patients/{patient_id}/disclosures")},
    ("/api/v1/patients/{patient_id}/notes", "post", "503"): "tests/faults/test_audit_store_failure.py",
}
DOCUMENT = load_document()


def documented_operations(document: dict) -> set[tuple[str, str, str]]:
    return {(path, method, status) for path, item in document["paths"].items()
            for method, operation in item.items() if method in {"get", "post", "put", "patch", "delete"}
            for status in operation["responses"]}


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def response_spec(document: dict, path: str, method: str, status: int) -> tuple[dict, str]:
    """The documented response for this status, and its JSON pointer (following a $ref to components)."""
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which the document does not list"
    node, pointer = responses[str(status)], _pointer("paths", path, method, "responses", str(status))
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/")
        node = document
        for part in pointer.split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, pointer


class Checker:
    """Validates real responses against the document and remembers which (operation, status) it saw."""

    def __init__(self, document: dict):
        self.document = document
        self.seen: set[tuple[str, str, str]] = set()

    def check(self, response: requests.Response, path: str, method: str = "get") -> requests.Response:
        spec, pointer = response_spec(self.document, path, method, response.status_code)
        media_type = response.headers["Content-Type"].split(";")[0].strip()
        assert media_type in spec["content"], f"{path} {response.status_code} sent {media_type}"
        pointer = f"{pointer}/{_pointer('content', media_type, 'schema')}"
        # The whole document is the root schema, so its "#/components/..." references resolve as written.
        validator = Draft202012Validator({**self.document, "$ref": f"#/{pointer}"},
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(response.json()), key=lambda error: list(error.path))
        assert not errors, f"{method.upper()} {path} {response.status_code}: " + "; ".join(
            f"{list(error.path)}: {error.message}" for error in errors[:5])
        assert response.headers.get("X-Request-ID"), "every response carries X-Request-ID"
        self.seen.add((path, method, str(response.status_code)))
        return response


@pytest.fixture(scope="module")
def portal(portal_in_process_for_module):
    """A portal with small limits, so the 429 answers can be reached in a few requests."""
    portal_in_process_for_module.configure(search_distinct_patients_per_hour=2, report_rate_limit="4 per minute")
    return portal_in_process_for_module


@pytest.fixture(scope="module")
def sessions(portal):
    return {login: sign_in(portal.url, login) for login in ("alice", "dr.chen", "dr.okafor", "dr.reyes", "cora")}


def test_the_document_is_valid_openapi_3_1(portal):
    validate(DOCUMENT)
    served = requests.get(portal.url + "/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
    validate(served.json())
    assert served.json()["openapi"].startswith("3.1.")
    # This deployment's session cookie (plain http in the tests, so not the __Host- name).
    assert served.json()["components"]["securitySchemes"]["session"]["name"] == "portal"


def test_every_api_route_is_documented_and_every_documented_path_is_routed(portal):
    """Against `flask routes`, the portal's own list of what it serves."""
    listing = portal.app.test_cli_runner().invoke(routes_command).stdout
    rules = []
    for line in listing.splitlines():
        columns = line.split()
        if len(columns) >= 3 and columns[-1].startswith(API + "/"):
            methods = {method.strip(",") for method in columns[1:-1] if method.strip(",").isupper()}
            rules.append((columns[-1], methods - {"HEAD", "OPTIONS"}, columns[0]))
    assert rules, listing
    documented = {(path, method) for path, method, _ in documented_operations(DOCUMENT)}
    for rule, methods, _ in rules:
        template = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)
        for method in methods:
            assert (template, method.lower()) in documented, f"{method} {rule} is served but not documented"
    routing = Map([Rule(rule, methods=methods, endpoint=endpoint) for rule, methods, endpoint in rules]).bind("portal")
    for path, method in documented:
        for concrete in _examples(path):
            endpoint, _ = routing.match(concrete, method=method.upper())
            assert endpoint, f"{method.upper()} {concrete} reaches no route"


def _examples(path: str) -> list[str]:
    concrete = path.replace("{patient_id}", ALICE)
    return [concrete.replace("{section}", section) for section in SECTIONS] if "{section}" in concrete else [concrete]


def test_real_responses_match_the_document(portal, sessions):
    checker = Checker(DOCUMENT)
    check = checker.check
    url = portal.url
    anonymous = requests.Session()
    alice, chen, okafor, reyes, cora = (sessions[name] for name in ("alice", "dr.chen", "dr.okafor", "dr.reyes", "cora"))
    unknown = str(uuid.uuid4())

    check(anonymous.get(url + "/api/v1/openapi.json", timeout=10), "/api/v1/openapi.json")

    me = "/api/v1/me"
    check(alice.get(url + me, timeout=10), me)
    check(anonymous.get(url + me, timeout=10), me)

    mine = "/api/v1/me/chart"
    check(alice.get(url + mine, timeout=10), mine)
    check(chen.get(url + mine, timeout=10), mine)  # 404 not_a_patient
    check(anonymous.get(url + mine, timeout=10), mine)

    search = "/api/v1/patients"
    assert check(chen.get(url + search, params={"mrn": ALICE_MRN}, timeout=10), search).status_code == 200
    assert check(chen.get(url + search, params={"birth_date": "31/12/1980"}, timeout=10), search).status_code == 400
    assert check(alice.get(url + search, params={"mrn": BOB_MRN}, timeout=10), search).status_code == 403
    check(anonymous.get(url + search, params={"mrn": ALICE_MRN}, timeout=10), search)
    statuses = [check(okafor.get(url + search, params={"mrn": seeded_mrn(n)}, timeout=10), search).status_code
                for n in (0, 1, 2)]
    assert statuses == [200, 200, 429], statuses  # two different patients an hour, in this portal

    chart = "/api/v1/patients/{patient_id}"
    assert check(chen.get(f"{url}/api/v1/patients/{ALICE}", timeout=10), chart).status_code == 200
    assert check(chen.get(f"{url}/api/v1/patients/not-a-uuid", timeout=10), chart).status_code == 400
    assert check(reyes.get(f"{url}/api/v1/patients/{ALICE}", timeout=10), chart).status_code == 403
    assert check(alice.get(f"{url}/api/v1/patients/{BOB}", timeout=10), chart).status_code == 404
    check(anonymous.get(f"{url}/api/v1/patients/{ALICE}", timeout=10), chart)

    fhir = "/api/v1/patients/{patient_id}/fhir"
    bundle = check(chen.get(f"{url}/api/v1/patients/{ALICE}/fhir", timeout=10), fhir)
    assert bundle.status_code == 200 and bundle.headers["Content-Type"] == "application/fhir+json"
    assert check(chen.get(f"{url}/api/v1/patients/x/fhir", timeout=10), fhir).status_code == 400
    assert check(reyes.get(f"{url}/api/v1/patients/{ALICE}/fhir", timeout=10), fhir).status_code == 403
    assert check(alice.get(f"{url}/api/v1/patients/{BOB}/fhir", timeout=10), fhir).status_code == 404
    check(anonymous.get(f"{url}/api/v1/patients/{ALICE}/fhir", timeout=10), fhir)

    section = "/api/v1/patients/{patient_id}/{section}"
    for name in SECTIONS:
        answer = check(chen.get(f"{url}/api/v1/patients/{ALICE}/{name}", timeout=10), section)
        assert answer.status_code == 200 and list(answer.json()) == [name]
    assert check(chen.get(f"{url}/api/v1/patients/{ALICE}/secrets", timeout=10), section).json()["error"]["code"] == \
        "unknown_section"
    assert check(chen.get(f"{url}/api/v1/patients/x/results", timeout=10), section).status_code == 400
    assert check(reyes.get(f"{url}/api/v1/patients/{ALICE}/results", timeout=10), section).status_code == 403
    assert check(anonymous.get(f"{url}/api/v1/patients/{ALICE}/results", timeout=10), section).status_code == 401

    notes = "/api/v1/patients/{patient_id}/notes"
    token = {"X-CSRFToken": csrf_token(chen, url + "/")}
    note = {"title": "Follow-up", "text": "Blood pressure recheck in two weeks.", "submission_id": str(uuid.uuid4())}
    alice_notes = f"{url}/api/v1/patients/{ALICE}/notes"
    assert check(chen.post(alice_notes, json=note, headers=token, timeout=10), notes, "post").status_code == 201
    assert check(chen.post(alice_notes, json=note, headers=token, timeout=10), notes, "post").status_code == 200
    reused = chen.post(f"{url}/api/v1/patients/{BOB}/notes", json=note, headers=token, timeout=10)
    assert check(reused, notes, "post").status_code == 409
    assert check(chen.post(alice_notes, json=["not", "an", "object"], headers=token, timeout=10), notes, "post") \
        .json()["error"]["code"] == "bad_json"
    assert check(chen.post(alice_notes, json=note, timeout=10), notes, "post").json()["error"]["code"] == "csrf"
    too_large = chen.post(alice_notes, data=b"x" * (1024 * 1024 + 1), headers={**token, "Content-Type": "application/json"},
                          timeout=30)
    assert check(too_large, notes, "post").status_code == 413
    patient_token = {"X-CSRFToken": csrf_token(alice, url + "/chart")}
    assert check(alice.post(alice_notes, json=note, headers=patient_token, timeout=10), notes, "post").status_code == 403
    unknown_chart = chen.post(f"{url}/api/v1/patients/{unknown}/notes", json=note, headers=token, timeout=10)
    assert check(unknown_chart, notes, "post").status_code == 404
    anonymous_token = {"X-CSRFToken": csrf_token(anonymous, url + "/")}
    assert check(anonymous.post(alice_notes, json=note, headers=anonymous_token, timeout=10), notes, "post") \
        .status_code == 401

    disclosures = "/api/v1/patients/{patient_id}/disclosures"
    report = check(cora.get(f"{url}/api/v1/patients/{ALICE}/disclosures", timeout=30), disclosures)
    assert report.status_code == 200 and report.json()["count"] >= 1
    bad_range = cora.get(f"{url}/api/v1/patients/{ALICE}/disclosures", params={"start": "yesterday"}, timeout=10)
    assert check(bad_range, disclosures).status_code == 400
    assert check(cora.get(f"{url}/api/v1/patients/x/disclosures", timeout=10), disclosures).status_code == 400
    assert check(chen.get(f"{url}/api/v1/patients/{ALICE}/disclosures", timeout=10), disclosures).status_code == 403
    assert check(alice.get(f"{url}/api/v1/patients/{BOB}/disclosures", timeout=10), disclosures).status_code == 404
    check(anonymous.get(f"{url}/api/v1/patients/{ALICE}/disclosures", timeout=10), disclosures)
    limited = []  # four a minute per person (one spent above): refused within a few more
    while 429 not in limited and len(limited) < 8:
        limited.append(check(alice.get(f"{url}/api/v1/patients/{ALICE}/disclosures", timeout=30), disclosures).status_code)
    assert limited[0] == 200 and limited[-1] == 429 and set(limited[:-1]) == {200}, limited

    exercised = checker.seen
    documented = documented_operations(DOCUMENT)
    assert exercised <= documented
    assert documented - exercised == set(NOT_EXERCISED), sorted(documented - exercised - set(NOT_EXERCISED))
