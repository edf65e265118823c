"""Patients connect their own apps: SMART on FHIR through real HTTP, with standard client libraries.

One portal (run.py, SQLite) signed in through the independent npm OpenID provider serves the whole
module. A confidential app uses ``fhirclient`` (the SMART on FHIR Python client: it finds the
endpoints in the CapabilityStatement's oauth-uris extension and parses every resource with its own
R4 models); a public app uses Authlib's ``OAuth2Session`` (it finds them in the SMART configuration).
The person signs in at the provider and answers the consent page with a ``requests`` session, as a
browser would. Resources are also validated with ``fhir.resources``: it ships R5, R4B and STU3 but
no R4, so its R4B models are the closest check it offers (R4B changed none of these resources'
elements that the portal uses).

The module is long because its journeys, token checks and refusals share that one stack (a portal process,
the npm provider and the registered apps); split, each part would start the stack again.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa
from authlib.integrations.requests_client import OAuth2Session
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhirclient import client as fhir_client
from fhirclient.models.allergyintolerance import AllergyIntolerance as ClientAllergy
from fhirclient.models.condition import Condition as ClientCondition
from fhirclient.models.documentreference import DocumentReference as ClientDocument
from fhirclient.models.medicationrequest import MedicationRequest as ClientMedication
from fhirclient.models.observation import Observation as ClientObservation
from fhirclient.server import FHIRUnauthorizedException
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, csrf_token, portal_env, prepare_database
from tests.support.seed import ALICE, BOB
from tests.support.smart_apps import (
    APP_REDIRECT,
    RegisteredApp,
    authorize_url,
    consent_types,
    decide,
    exchange,
    fhir_get,
    open_consent,
    query_of,
    refresh,
    register_app,
)

pytestmark = pytest.mark.oidc

RESOURCE_TYPES = ("Patient", "Condition", "MedicationRequest", "AllergyIntolerance", "Observation", "DocumentReference")
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@dataclass
class Stack:
    portal: PortalServer
    database_url: str
    confidential: RegisteredApp
    public: RegisteredApp
    narrow: RegisteredApp  # registered for laboratory Observations only
    reader: RegisteredApp  # holds the module's one long-lived token (connecting an app again replaces its grant)

    @property
    def url(self) -> str:
        return self.portal.url

    @property
    def fhir(self) -> str:
        return self.portal.url + "/fhir"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("smart")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(32)
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    with npm_idp.NpmOidcProvider([npm_idp.portal_client("portal-smart", secret, url)], npm_idp.demo_accounts()) as idp:
        env = portal_env(tmp, database_url, port, **npm_idp.portal_oidc_env(idp.issuer, "portal-smart", secret))
        prepare_database(env)
        confidential = register_app(env, "Health Diary")  # the command line, as an administrator runs it
        with PortalServer(env, port, tmp / "portal.log") as server:
            admin = person_at(url, "demo-adam")  # and the registry page
            public = register_on_page(url, admin, "Family Tracker", public=True)
            narrow = register_on_page(url, admin, "Lab Viewer", public=True,
                                      scopes=f"launch/patient openid fhirUser patient/Observation.rs?category={LAB}")
            reader = register_on_page(url, admin, "Chart Reader", public=True)
            yield Stack(server, database_url, confidential, public, narrow, reader)


def person_at(portal_url: str, login: str) -> requests.Session:
    """A browser session of ``login`` signed in to the portal through the npm provider."""
    session, response = npm_idp.sign_in_portal(portal_url, login)
    assert response.status_code == 302, response.text[:300]
    return session


def person(stack: Stack, login: str = "demo-alice") -> requests.Session:
    return person_at(stack.url, login)


def register_on_page(portal_url: str, admin: requests.Session, name: str, *, public: bool,
                     scopes: str = "launch/patient openid fhirUser offline_access patient/*.rs") -> RegisteredApp:
    page = admin.post(f"{portal_url}/admin/apps", data={
        "csrf_token": csrf_token(admin, f"{portal_url}/admin/apps"), "name": name, "redirect_uris": APP_REDIRECT,
        "scopes": scopes, "client_type": "public" if public else "confidential"}, timeout=15)
    assert page.status_code == 200, page.text[:500]
    client_id = re.search(r'data-client-id>([^<]+)<', page.text).group(1)
    secret = re.search(r'data-client-secret>([^<]+)<', page.text)
    return RegisteredApp(client_id, secret.group(1) if secret else None, APP_REDIRECT)


def connect(stack: Stack, app: RegisteredApp, session: requests.Session, scope: str, *, untick: tuple[str, ...] = ()):
    """The whole standalone launch by hand; returns the token response's JSON."""
    url, verifier = authorize_url(stack.url, app, scope=scope)
    page = open_consent(session, url)
    assert page.status_code == 200 and "Connect" in page.text, page.text[:300]
    location = decide(session, page, untick=untick)
    answer = exchange(stack.url, app, query_of(location)["code"], verifier)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_discovery_names_every_endpoint_and_capability(stack):
    config = requests.get(f"{stack.fhir}/.well-known/smart-configuration", timeout=10)
    assert config.status_code == 200
    body = config.json()
    assert body["code_challenge_methods_supported"] == ["S256"]
    for capability in ("launch-standalone", "client-public", "client-confidential-symmetric",
                       "context-standalone-patient", "permission-patient", "permission-offline", "permission-v1",
                       "permission-v2", "sso-openid-connect"):
        assert capability in body["capabilities"]
    for endpoint in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "introspection_endpoint",
                     "management_endpoint", "jwks_uri"):
        assert body[endpoint].startswith(stack.url), endpoint
    metadata = requests.get(f"{stack.fhir}/metadata", timeout=10)
    assert metadata.status_code == 200 and metadata.headers["Content-Type"].startswith("application/fhir+json")
    statement = CapabilityStatement.model_validate(metadata.json())
    oauth = statement.rest[0].security.extension[0]
    assert oauth.url == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {e.url: e.valueUri for e in oauth.extension}["authorize"] == body["authorization_endpoint"]
    profiles = {r.type: r.supportedProfile[0] for r in statement.rest[0].resource}
    assert profiles["Observation"].endswith("us-core-observation-lab") and set(profiles) == set(RESOURCE_TYPES)


# --------------------------------------------------------------------------- the journeys, end to end


def test_a_confidential_app_connects_reads_refreshes_and_is_disconnected_by_the_patient(stack):
    """fhirclient as the app: discovery in /metadata, launch, consent with one type unticked, reads and searches
    of every type granted (paging followed), refresh; then the patient disconnects it and it is refused."""
    app = stack.confidential
    smart = fhir_client.FHIRClient(settings={
        "app_id": app.client_id, "app_secret": app.client_secret, "api_base": stack.fhir,
        "redirect_uri": app.redirect_uri, "scope": "openid fhirUser offline_access patient/*.rs"})
    browser = requests.Session()
    consent = open_consent(browser, smart.authorize_url, login="demo-alice")
    assert consent.status_code == 200
    assert consent_types(consent) == list(RESOURCE_TYPES)
    assert "data-offline-note" in consent.text and "Health Diary" in consent.text
    smart.handle_callback(decide(browser, consent, untick=("DocumentReference",)))

    assert smart.patient_id == ALICE
    assert smart.human_name(smart.patient.name[0]) == "Alice Moreau"
    server = smart.server
    conditions = list(ClientCondition.where({"patient": ALICE, "category": "problem-list-item"}).perform_resources_iter(server))
    medications = list(ClientMedication.where({"patient": ALICE, "intent": "order"}).perform_resources_iter(server))
    active = list(ClientMedication.where({"patient": ALICE, "intent": "order", "status": "active"})
                  .perform_resources_iter(server))
    allergies = list(ClientAllergy.where({"patient": ALICE}).perform_resources_iter(server))
    labs = list(ClientObservation.where({"patient": ALICE, "category": "laboratory", "_count": "2"})
                .perform_resources_iter(server))  # pages of two: fhirclient follows each "next" link
    assert conditions and medications and [m.id for m in active] == [m.id for m in medications] and len(labs) == 9
    assert all(o.code.coding[0].system == "http://loinc.org" for o in labs)
    by_code = list(ClientObservation.where({"patient": ALICE, "code": f"http://loinc.org|{labs[0].code.coding[0].code}"})
                   .perform_resources_iter(server))
    assert by_code and all(o.code.coding[0].code == labs[0].code.coding[0].code for o in by_code)
    newest = labs[0].effectiveDateTime.date
    recent = list(ClientObservation.where({"patient": ALICE, "category": "laboratory",
                                           "date": f"ge{(newest - timedelta(days=30)).date().isoformat()}"})
                  .perform_resources_iter(server))
    assert recent and len(recent) < len(labs)
    assert allergies is not None
    with pytest.raises(Exception) as unticked:  # the patient unticked visit notes: 403, an OperationOutcome
        list(ClientDocument.where({"patient": ALICE}).perform_resources_iter(server))
    assert unticked.value.response.status_code == 403

    first_token = smart.server.auth.access_token
    assert smart.reauthorize() and smart.server.auth.access_token != first_token  # refresh, rotated
    assert smart.patient_id == ALICE and list(ClientCondition.where({"patient": ALICE}).perform_resources_iter(server))

    apps_page = browser.get(f"{stack.url}/me/apps", timeout=10)
    row = re.search(r'<tr data-app="' + re.escape(app.client_id) + r'">(.*?)</tr>', apps_page.text, re.S).group(1)
    assert "Health Diary" in row and "Your test results" in row and "Your visit notes" not in row
    assert "Not yet" not in row  # first and last use shown
    reads = int(re.findall(r"<td>(\d+)</td>", row)[-1])
    assert reads >= 8
    viewed = browser.get(f"{stack.url}/chart/access-log", timeout=10).text
    assert "Health Diary" in viewed and "App you connected" in viewed
    disclosures = browser.get(f"{stack.url}/me/disclosures", timeout=30).text
    assert "Health Diary" in disclosures and "App connected by Alice Moreau" in disclosures

    revoke = re.search(r'action="(/me/apps/[^"]+/revoke)"', row).group(1)
    done = browser.post(stack.url + revoke, data={"csrf_token": csrf_token(browser, f"{stack.url}/me/apps")}, timeout=10)
    assert done.status_code == 200 and "Health Diary is disconnected" in done.text
    smart.patient_id, smart._patient = ALICE, None
    with pytest.raises(FHIRUnauthorizedException):
        ClientCondition.where({"patient": ALICE}).perform(server)
    with pytest.raises(requests.HTTPError):  # its refresh token went with the grant
        smart.reauthorize()
    assert audit_rows(stack.database_url, action="smart.grant.revoked", reason="revoked_by_patient")


def test_a_public_app_with_authlib_gets_an_id_token_refreshes_introspects_and_revokes(stack):
    """Authlib's OAuth2Session as a public app (PKCE, no secret); the person's portal session is reused."""
    app, browser = stack.public, person(stack)
    discovery = requests.get(f"{stack.fhir}/.well-known/smart-configuration", timeout=10).json()
    responses: list[requests.Response] = []
    client = OAuth2Session(app.client_id, redirect_uri=app.redirect_uri, code_challenge_method="S256",
                           token_endpoint_auth_method="none",
                           scope="launch/patient openid fhirUser offline_access patient/Observation.rs patient/Patient.rs")
    client.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(12)
    url, state = client.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier,
                                                 aud=stack.fhir, nonce=nonce)
    consent = open_consent(browser, url)  # already signed in: straight to the consent page
    assert consent.status_code == 200 and consent_types(consent) == ["Patient", "Observation"]
    token = client.fetch_token(discovery["token_endpoint"], authorization_response=decide(browser, consent),
                               code_verifier=verifier)
    issued = responses[-1]
    assert issued.headers["Cache-Control"] == "no-store"
    assert token["patient"] == ALICE and 0 < token["expires_in"] <= 3600
    assert set(token["scope"].split()) == {"launch/patient", "openid", "fhirUser", "offline_access",
                                           "patient/Observation.rs", "patient/Patient.rs"}
    keys = KeySet.import_key_set(requests.get(discovery["jwks_uri"], timeout=10).json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    claims = id_token.claims
    assert claims["iss"] == stack.fhir and claims["aud"] == app.client_id and claims["nonce"] == nonce
    assert claims["fhirUser"] == f"{stack.fhir}/Patient/{ALICE}"

    labs = client.get(f"{stack.fhir}/Observation", params={"patient": ALICE, "category": "laboratory"}, timeout=10)
    assert labs.status_code == 200 and labs.json()["total"] == 9
    assert client.get(f"{stack.fhir}/Patient/{ALICE}", timeout=10).json()["id"] == ALICE

    old = dict(token)
    token = client.refresh_token(discovery["token_endpoint"])
    assert token["refresh_token"] != old["refresh_token"] and token["access_token"] != old["access_token"]
    assert fhir_get(stack.url, f"Patient/{ALICE}", old["access_token"]).status_code == 401  # retired with its pair
    info = client.introspect_token(discovery["introspection_endpoint"], token=token["access_token"]).json()
    assert info["active"] and info["patient"] == ALICE and info["client_id"] == app.client_id
    assert info["scope"] == token["scope"] and info["exp"] > datetime.now(timezone.utc).timestamp()
    lasting = client.introspect_token(discovery["introspection_endpoint"], token=token["refresh_token"],
                                      token_type_hint="refresh_token").json()
    assert lasting["active"] and lasting["exp"] >= (datetime.now(timezone.utc) + timedelta(days=91)).timestamp()

    mishinted = client.introspect_token(discovery["introspection_endpoint"], token=token["access_token"],
                                        token_type_hint="refresh_token").json()
    assert mishinted["active"], "a wrong hint must not make a live token look inactive (RFC 7662 section 2.1)"
    revoked = client.revoke_token(discovery["revocation_endpoint"], token=token["access_token"],
                                  token_type_hint="refresh_token")  # the wrong hint: still found (RFC 7009)
    assert revoked.status_code == 200
    refused = fhir_get(stack.url, f"Patient/{ALICE}", token["access_token"])
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert client.introspect_token(discovery["introspection_endpoint"], token=token["access_token"]).json() == {
        "active": False}
    assert audit_rows(stack.database_url, action="smart.token.revoked", outcome="allowed")


# --------------------------------------------------------------------------- tokens, storage and the audit trail


@pytest.fixture(scope="module")
def alice_token(stack) -> dict:
    """A live token for Alice's chart, every type granted, of an app no other test connects."""
    return connect(stack, stack.reader, person(stack), "launch/patient offline_access patient/*.rs")


def test_every_resource_read_and_searched_validates_as_fhir(stack, alice_token):
    access = alice_token["access_token"]
    for resource_type in RESOURCE_TYPES:
        bundle = fhir_get(stack.url, resource_type, access, _count="3")
        assert bundle.status_code == 200, bundle.text
        get_fhir_model_class("Bundle").model_validate(bundle.json())
        pages = 0
        while bundle is not None:
            body = bundle.json()
            assert body["type"] == "searchset"
            for entry in body["entry"]:
                resource = entry["resource"]
                assert resource["meta"]["profile"][0].startswith("http://hl7.org/fhir/us/core/StructureDefinition/")
                get_fhir_model_class(resource_type).model_validate(resource)
                read = fhir_get(stack.url, f"{resource_type}/{resource['id']}", access)
                assert read.status_code == 200 and read.json() == resource
            following = [link["url"] for link in body["link"] if link["relation"] == "next"]
            bundle = fhir_get(stack.url, following[0], access) if following else None
            pages += 1
        assert pages >= 1
    medication = fhir_get(stack.url, "MedicationRequest", access).json()["entry"][0]["resource"]
    assert medication["requester"]["extension"][0]["url"] == "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def test_tokens_and_secrets_are_stored_only_as_hashes(stack, alice_token):
    engine = sa.create_engine(stack.database_url)
    with engine.connect() as conn:
        tokens = [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM smart_token"))]
        apps = [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM smart_app"))]
        codes = [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM smart_authorization_code"))]
    engine.dispose()
    stored = json.dumps([tokens, apps, codes], default=str)
    for value in (alice_token["access_token"], alice_token["refresh_token"], stack.confidential.client_secret):
        assert value not in stored
    digest = hashlib.sha256(alice_token["access_token"].encode()).hexdigest()
    assert any(row["access_token_hash"] == digest for row in tokens)
    admin_page = person(stack, "demo-adam").get(f"{stack.url}/admin/apps", timeout=10)
    assert stack.confidential.client_id in admin_page.text and stack.confidential.client_secret not in admin_page.text


def test_every_fhir_access_is_audited_with_the_person_the_app_and_the_scopes(stack, alice_token):
    fhir_get(stack.url, "Observation", alice_token["access_token"], category="laboratory")
    events = audit_rows(stack.database_url, action="fhir.search", patient_id=ALICE, outcome="allowed")
    details = json.loads(events[-1]["details"])
    assert details["client_id"] == stack.reader.client_id and details["app"] == "Chart Reader"
    assert details["scopes"] == alice_token["scope"] and details["fhir_type"] == "Observation"
    alice_account = events[-1]["actor_id"]
    assert alice_account and events[-1]["actor_role"] == "patient" and events[-1]["resource_type"] == "results"
    assert "Alice" not in json.dumps(events[-1], default=str)  # identifiers only


# --------------------------------------------------------------------------- one patient's token, never another's


@pytest.fixture(scope="module")
def bob_observation(stack) -> str:
    engine = sa.create_engine(stack.database_url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT id FROM lab_result WHERE patient_id = :p LIMIT 1"), {"p": BOB}).scalar_one()
    engine.dispose()
    return found


@pytest.mark.parametrize("path, params", [
    pytest.param(f"Patient/{BOB}", {}, id="read-patient"),
    pytest.param("Patient", {"_id": BOB}, id="search-patient-by-id"),
    pytest.param("Observation", {"patient": BOB}, id="search-observations"),
    pytest.param("Condition", {"patient": f"Patient/{BOB}", "category": "problem-list-item"}, id="search-conditions"),
])
def test_a_token_for_one_patient_never_reads_another(stack, alice_token, path, params):
    response = fhir_get(stack.url, path, alice_token["access_token"], **params)
    assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"
    assert "Lindqvist" not in response.text
    assert audit_rows(stack.database_url, patient_id=BOB, outcome="denied",
                              reason="not the patient who connected the app")


def test_nor_by_reading_another_patients_resource_or_a_tampered_paging_link(stack, alice_token, bob_observation):
    access = alice_token["access_token"]
    bobs = fhir_get(stack.url, f"Observation/{bob_observation}", access)
    nobodys = fhir_get(stack.url, f"Observation/{uuid.uuid4()}", access)
    assert bobs.status_code == nobodys.status_code == 404
    assert bobs.json()["issue"] == nobodys.json()["issue"], "the answer must not tell that Bob's record exists"
    page = fhir_get(stack.url, "Observation", access, patient=ALICE, _count="2").json()
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert ALICE in following
    tampered = fhir_get(stack.url, following.replace(ALICE, BOB), access)
    assert tampered.status_code == 404 and "entry" not in tampered.json()


# --------------------------------------------------------------------------- what bad input gets


def authorization(stack, app=None, **overrides) -> requests.Response:
    url, _ = authorize_url(stack.url, app or stack.public, **overrides)
    return requests.get(url, allow_redirects=False, timeout=10)


def refused_to_app(response: requests.Response, error: str) -> dict[str, str]:
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    assert location.startswith(APP_REDIRECT), location
    query = query_of(location)
    assert query["error"] == error and query["state"] == "s-1" and "code" not in query
    return query


def test_an_unknown_client_or_a_mismatched_redirect_uri_is_told_to_the_person_never_redirected(stack):
    unknown = authorization(stack, client_id="no-such-app")
    assert unknown.status_code == 400 and "Location" not in unknown.headers
    assert 'data-error-code="oauth_invalid_client"' in unknown.text
    elsewhere = authorization(stack, redirect_uri="https://evil.example/steal")
    assert elsewhere.status_code == 400 and "Location" not in elsewhere.headers
    assert 'data-error-code="oauth_invalid_request"' in elsewhere.text
    prefix = authorization(stack, redirect_uri=APP_REDIRECT + "/extra")  # exact match only
    assert prefix.status_code == 400 and "Location" not in prefix.headers
    reasons = [row["reason"] for row in audit_rows(stack.database_url, action="smart.authorize", outcome="denied")]
    assert "invalid_client" in reasons and "invalid_request" in reasons


@pytest.mark.parametrize("overrides, error", [
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request", id="no-pkce"),
    pytest.param({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request", id="plain-pkce"),
    pytest.param({"code_challenge_method": None}, "invalid_request", id="pkce-without-method"),
    pytest.param({"aud": None}, "invalid_request", id="no-aud"),
    pytest.param({"aud": "https://other.example/fhir"}, "invalid_request", id="wrong-aud"),
    pytest.param({"scope": "launch/patient user/*.rs"}, "invalid_scope", id="user-scope"),
    pytest.param({"scope": "patient/Encounter.rs"}, "invalid_scope", id="unsupported-type"),
    pytest.param({"scope": "patient/*.cruds"}, "invalid_scope", id="write-scope"),
    pytest.param({"scope": "patient/Observation.rs?code=1234-5"}, "invalid_scope", id="unsupported-restriction"),
    pytest.param({"scope": "online_access patient/*.rs"}, "invalid_scope", id="unknown-scope"),
])
def test_a_malformed_authorization_request_goes_back_to_the_app_with_its_error(stack, overrides, error):
    query = refused_to_app(authorization(stack, **overrides), error)
    assert query.get("error_description")


def test_scopes_beyond_the_apps_registration_are_refused(stack):
    refused_to_app(authorization(stack, app=stack.narrow, scope="launch/patient patient/*.rs"), "invalid_scope")
    refused_to_app(authorization(stack, app=stack.narrow, scope="patient/Observation.rs"), "invalid_scope")


def test_denied_consent_sends_access_denied_and_grants_nothing(stack):
    browser = person(stack)
    url, _ = authorize_url(stack.url, stack.public, scope="patient/*.rs")
    location = decide(browser, open_consent(browser, url), allow=False)
    query = query_of(location)
    assert query["error"] == "access_denied" and query["state"] == "s-1" and "code" not in query
    assert audit_rows(stack.database_url, action="smart.authorize", outcome="denied", reason="access_denied")


def code_for(stack, app: RegisteredApp, scope: str = "launch/patient offline_access patient/*.rs") -> tuple[str, str]:
    browser = person(stack)
    url, verifier = authorize_url(stack.url, app, scope=scope)
    return query_of(decide(browser, open_consent(browser, url)))["code"], verifier


def test_a_reused_code_is_refused_and_revokes_what_its_first_use_issued(stack):
    code, verifier = code_for(stack, stack.confidential)
    first = exchange(stack.url, stack.confidential, code, verifier)
    assert first.status_code == 200
    again = exchange(stack.url, stack.confidential, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert fhir_get(stack.url, f"Patient/{ALICE}", first.json()["access_token"]).status_code == 401
    assert audit_rows(stack.database_url, action="smart.grant.revoked", reason="code_reused")


def test_an_expired_code_is_refused(stack):
    code, verifier = code_for(stack, stack.public)
    engine = sa.create_engine(stack.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE smart_authorization_code SET expires_at = :t WHERE code_hash = :h"),
                     {"t": datetime.now(timezone.utc) - timedelta(seconds=1),
                      "h": hashlib.sha256(code.encode()).hexdigest()})
    engine.dispose()
    expired = exchange(stack.url, stack.public, code, verifier)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"
    assert audit_rows(stack.database_url, action="smart.token", outcome="denied", reason="expired")


@pytest.mark.parametrize("app_name", ["confidential", "public"])
def test_every_client_must_prove_pkce_at_the_token_endpoint(stack, app_name):
    app = getattr(stack, app_name)
    code, verifier = code_for(stack, app)
    missing = exchange(stack.url, app, code, None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    code, verifier = code_for(stack, app)
    wrong = exchange(stack.url, app, code, verifier[::-1])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_a_rotated_refresh_token_presented_again_revokes_the_whole_grant(stack):
    token = connect(stack, stack.confidential, person(stack), "launch/patient offline_access patient/*.rs")
    rotated = refresh(stack.url, stack.confidential, token["refresh_token"])
    assert rotated.status_code == 200
    newer = rotated.json()
    reused = refresh(stack.url, stack.confidential, token["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert refresh(stack.url, stack.confidential, newer["refresh_token"]).status_code == 400
    assert fhir_get(stack.url, f"Patient/{ALICE}", newer["access_token"]).status_code == 401
    assert audit_rows(stack.database_url, action="smart.grant.revoked", reason="refresh_token_reused")


def test_without_offline_access_no_refresh_token_is_issued(stack):
    token = connect(stack, stack.public, person(stack), "launch/patient patient/Patient.rs")
    assert "refresh_token" not in token and token["scope"] == "launch/patient patient/Patient.rs"


@pytest.mark.parametrize("path, params", [
    pytest.param("Observation", {"date": "2024-13-01"}, id="impossible-date"),
    pytest.param("Observation", {"date": "ap2024"}, id="unsupported-date-prefix"),
    pytest.param("Observation", {"date": "2024-01-01T10:00"}, id="date-time-without-zone"),
    pytest.param("Observation", {"_count": "many"}, id="count-word"),
    pytest.param("Observation", {"_count": "1000"}, id="count-too-big"),
    pytest.param("Observation", {"_count": "\u00b2"}, id="count-superscript-digit"),
    pytest.param("Observation", {"_count": "\u0663"}, id="count-arabic-indic-digit"),
    pytest.param("Observation", {"date": "9999-12"}, id="date-month-at-the-end-of-time"),
    pytest.param("Observation", {"date": "9999-12-31T23:59:59Z"}, id="date-time-at-the-end-of-time"),
    pytest.param("Observation", {"date": "0001-01-01T00:00+01:00"}, id="date-time-before-year-1"),
    pytest.param("Observation", {"colour": "blue"}, id="unknown-parameter"),
    pytest.param("Observation", {"code:text": "sugar"}, id="unsupported-modifier"),
    pytest.param("Observation", {"patient": "not-a-patient"}, id="malformed-reference"),
    pytest.param("Condition", {"category": "|"}, id="empty-token"),
    pytest.param("MedicationRequest", {"_format": "xml"}, id="xml"),
    pytest.param("Patient", {"identifier": ""}, id="empty-value"),
])
def test_malformed_search_parameters_get_400_operation_outcome(stack, alice_token, path, params):
    refused_before = len(audit_rows(stack.database_url, action="request.refused"))
    response = fhir_get(stack.url, path, alice_token["access_token"], **params)
    assert response.status_code == 400, response.text
    assert len(audit_rows(stack.database_url, action="request.refused")) == refused_before + 1
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "invalid"
    OperationOutcome.model_validate(outcome)


@pytest.mark.parametrize("path", ["Encounter", f"Practitioner/{ALICE}", f"Observation/{ALICE}/_history", "Binary/x"])
def test_unsupported_resource_types_get_404_operation_outcome_audited(stack, alice_token, path):
    response = fhir_get(stack.url, path, alice_token["access_token"])
    assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"
    refused = audit_rows(stack.database_url, action="request.refused", outcome="denied")
    assert json.loads(refused[-1]["details"])["client_id"] == stack.reader.client_id


def test_expired_revoked_malformed_or_missing_tokens_get_401_with_a_challenge(stack):
    token = connect(stack, stack.public, person(stack), "launch/patient offline_access patient/*.rs")
    engine = sa.create_engine(stack.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE smart_token SET expires_at = :t WHERE access_token_hash = :h"),
                     {"t": datetime.now(timezone.utc) - timedelta(seconds=1),
                      "h": hashlib.sha256(token["access_token"].encode()).hexdigest()})
    engine.dispose()
    live = connect(stack, stack.public, person(stack), "launch/patient patient/*.rs")["access_token"]
    requests.post(f"{stack.url}/oauth/revoke", data={"token": live, "client_id": stack.public.client_id}, timeout=10)
    for access in (token["access_token"], live, "not-a-token", "x" * 500):
        response = fhir_get(stack.url, f"Patient/{ALICE}", access)
        assert response.status_code == 401, access
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="fhir", error="invalid_token"')
        assert response.json()["resourceType"] == "OperationOutcome" and "Moreau" not in response.text
    missing = fhir_get(stack.url, f"Patient/{ALICE}", None)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    basic = requests.get(f"{stack.fhir}/Patient/{ALICE}", auth=("user", "pass"), timeout=10)
    assert basic.status_code == 401
    refused = audit_rows(stack.database_url, action="request.refused", reason="invalid_token")
    assert any(json.loads(row["details"]).get("client_id") == stack.public.client_id for row in refused)


def test_a_scope_that_does_not_cover_the_type_gets_403(stack):
    token = connect(stack, stack.public, person(stack), "launch/patient patient/Observation.rs")
    response = fhir_get(stack.url, "Condition", token["access_token"], patient=ALICE)
    assert response.status_code == 403 and response.json()["issue"][0]["code"] == "forbidden"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert audit_rows(stack.database_url, action="fhir.search", outcome="denied", patient_id=ALICE)


def test_a_category_restricted_scope_reads_only_that_category(stack):
    token = connect(stack, stack.narrow, person(stack), f"launch/patient patient/Observation.rs?category={LAB}")
    access = token["access_token"]
    assert fhir_get(stack.url, "Observation", access, category="laboratory").json()["total"] == 9
    assert fhir_get(stack.url, "Observation", access).json()["total"] == 9  # narrowed to laboratory, all of them are
    assert fhir_get(stack.url, "Observation", access, category="vital-signs").status_code == 403
    assert fhir_get(stack.url, "Condition", access).status_code == 403


def test_connecting_the_same_app_again_replaces_its_grant(stack):
    browser = person(stack)
    first = connect(stack, stack.public, browser, "launch/patient patient/Patient.rs")
    second = connect(stack, stack.public, browser, "launch/patient patient/Patient.rs")
    assert fhir_get(stack.url, f"Patient/{ALICE}", first["access_token"]).status_code == 401
    assert fhir_get(stack.url, f"Patient/{ALICE}", second["access_token"]).status_code == 200
    page = browser.get(f"{stack.url}/me/apps", timeout=10).text
    assert page.count(f'data-app="{stack.public.client_id}"') == 1


def test_staff_cannot_connect_apps_and_nobody_else_can_disconnect_a_patients_app(stack):
    chen = person(stack, "demo-chen")
    url, _ = authorize_url(stack.url, stack.public, scope="patient/*.rs")
    page = open_consent(chen, url)
    assert page.status_code == 404 and "Location" not in page.headers
    assert chen.get(f"{stack.url}/me/apps", timeout=10).status_code == 404
    alice = person(stack)
    connect(stack, stack.public, alice, "launch/patient patient/Patient.rs")
    grant = re.search(r'action="/me/apps/([^/]+)/revoke"', alice.get(f"{stack.url}/me/apps", timeout=10).text).group(1)
    bob = person(stack, "demo-bob")
    attempt = bob.post(f"{stack.url}/me/apps/{grant}/revoke",
                       data={"csrf_token": csrf_token(bob, f"{stack.url}/me/apps")}, timeout=10)
    assert attempt.status_code == 404
    assert f"/me/apps/{grant}/revoke" in alice.get(f"{stack.url}/me/apps", timeout=10).text
