"""Sign-in against a real, independent OpenID Provider (panva's npm oidc-provider), over real HTTP.

One npm provider and two portal processes (its client signs ID tokens with RS256 for one, ES256 for
the other) share one seeded database for the whole module.
"""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, csrf_token, portal_env, prepare_database, sign_in
from tests.support.seed import ALICE

pytestmark = pytest.mark.oidc

SECRET = secrets.token_urlsafe(32)
ACCOUNTS = npm_idp.demo_accounts(
    demo_alice={"roles": ["patient", "superuser"]},           # unknown role values are ignored
    demo_chen={"roles": ["clinician", "ward-manager"]},
    demo_bob={"name": "Robert Lindqvist"},                    # the provider's name wins over the seed's
    demo_nora={"roles": ["visitor"]},                         # no portal role at all
)
ACCOUNTS["npm-newcomer"] = {"name": "Nia Newcomer", "email": "nia@example.test", "roles": ["clinician"]}
DEV_LOGINS = {"demo-alice": "alice", "demo-chen": "dr.chen", "demo-cora": "cora", "demo-adam": "adam",
              "demo-nora": "nora"}


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    rs256: PortalServer
    es256: PortalServer
    database_url: str
    tmp: Path
    seeded_ids: dict[str, str]

    def portal(self, alg: str) -> PortalServer:
        return self.rs256 if alg == "RS256" else self.es256


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    npm_idp.require_npm_idp()
    tmp = tmp_path_factory.mktemp("oidc-npm")
    ports = {"RS256": free_port(), "ES256": free_port()}
    clients = [npm_idp.portal_client(f"portal-{alg.lower()}", SECRET, f"http://127.0.0.1:{port}", alg)
               for alg, port in ports.items()]
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    with npm_idp.NpmOidcProvider(clients, ACCOUNTS) as idp:
        envs = {alg: portal_env(tmp, database_url, port, **npm_idp.portal_oidc_env(idp.issuer, f"portal-{alg.lower()}", SECRET))
                for alg, port in ports.items()}
        prepare_database(envs["RS256"])
        seeded_ids = _user_ids(database_url, idp.issuer)
        servers = {alg: PortalServer(envs[alg], port, tmp / f"portal-{alg}.log") for alg, port in ports.items()}
        npm_idp.start_portals(*servers.values())
        try:
            yield Stack(idp, servers["RS256"], servers["ES256"], database_url, tmp, seeded_ids)
        finally:
            npm_idp.stop_portals(*servers.values())


def _user_ids(database_url: str, issuer: str) -> dict[str, str]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT subject, id FROM user_account WHERE issuer = :iss"), {"iss": issuer})
        ids = {subject: user_id for subject, user_id in rows}
    engine.dispose()
    return ids


def _user_rows(database_url: str, subject: str) -> list[dict]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.text("SELECT id, issuer, subject, roles, patient_id, last_sign_in_at FROM user_account "
                    "WHERE subject = :sub"), {"sub": subject})]
    engine.dispose()
    return rows


def _rid() -> str:
    return uuid.uuid4().hex


def _refused(portal_url: str, stack: Stack, session: requests.Session, url: str, status: int, error: str,
             timeout: float = 10) -> requests.Response:
    """GET `url` as a step of sign-in; it must be refused with `status` and `error`, audited under its request id."""
    rid = _rid()
    response = session.get(url, headers={"X-Request-ID": rid}, allow_redirects=False, timeout=timeout)
    npm_idp.assert_signin_refused(portal_url, stack.database_url, session, response, status, error, rid)
    return response


# --- Happy paths ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subject, home, roles", [
    ("demo-alice", "/chart", ["patient"]),
    ("demo-chen", "/clinician", ["clinician"]),
    ("demo-cora", "/compliance/", ["compliance"]),
    ("demo-adam", "/admin/teams", ["admin"]),
])
def test_each_role_signs_in_and_lands_on_its_home_page(stack: Stack, subject: str, home: str, roles: list[str]) -> None:
    portal = stack.rs256
    rid = _rid()
    session, callback = npm_idp.sign_in_portal(portal.url, subject, headers={"X-Request-ID": rid})
    assert callback.status_code == 302, callback.text[:500]
    assert callback.headers["Location"] == "/"

    landing = session.get(portal.url + "/", timeout=10)
    assert landing.status_code == 200
    assert landing.url == portal.url + home

    me = session.get(portal.url + "/api/v1/me", timeout=10).json()
    assert me["roles"] == roles  # "superuser" / "ward-manager" from the provider are ignored

    # The row is the seeded one, keyed by (npm issuer, subject), and updated at sign-in.
    rows = _user_rows(stack.database_url, subject)
    assert [(r["issuer"], r["id"]) for r in rows] == [(stack.idp.issuer, stack.seeded_ids[subject])]
    assert me["id"] == rows[0]["id"]
    assert rows[0]["roles"] == ",".join(roles)
    assert rows[0]["last_sign_in_at"] is not None

    events = audit_rows(stack.database_url, request_id=rid)
    assert [(e["action"], e["outcome"], e["actor_id"]) for e in events] == [("signin.success", "allowed", me["id"])]


def test_patient_sees_their_own_chart(stack: Stack) -> None:
    session, _ = npm_idp.sign_in_portal(stack.rs256.url, "demo-alice")
    chart = session.get(stack.rs256.url + "/chart", timeout=10)
    assert chart.status_code == 200
    assert "My chart · Alice Moreau" in chart.text
    me = session.get(stack.rs256.url + "/api/v1/me", timeout=10).json()
    assert me["patient_id"] == ALICE
    data = session.get(stack.rs256.url + "/api/v1/me/chart", timeout=10).json()
    assert data["demographics"]["given_name"] == "Alice"


def test_provider_claims_update_the_user(stack: Stack) -> None:
    session, _ = npm_idp.sign_in_portal(stack.rs256.url, "demo-bob")
    me = session.get(stack.rs256.url + "/api/v1/me", timeout=10).json()
    assert me["name"] == "Robert Lindqvist"
    assert me["id"] == stack.seeded_ids["demo-bob"]


def test_user_without_a_portal_role_sees_the_no_access_page(stack: Stack) -> None:
    session, callback = npm_idp.sign_in_portal(stack.rs256.url, "demo-nora")
    assert callback.status_code == 302
    page = session.get(stack.rs256.url + "/", timeout=10)
    assert page.status_code == 403
    assert "no access to the portal" in page.text
    assert session.get(stack.rs256.url + "/api/v1/me", timeout=10).json()["roles"] == []


def test_a_new_subject_gets_one_new_user_row(stack: Stack) -> None:
    """Users are keyed by (issuer, subject): a person unknown to the seed gets a row at first sign-in, once."""
    assert _user_rows(stack.database_url, "npm-newcomer") == []
    ids = []
    for _ in range(2):
        session, callback = npm_idp.sign_in_portal(stack.rs256.url, "npm-newcomer")
        assert callback.status_code == 302
        ids.append(session.get(stack.rs256.url + "/api/v1/me", timeout=10).json()["id"])
    rows = _user_rows(stack.database_url, "npm-newcomer")
    assert [(r["issuer"], r["id"], r["roles"]) for r in rows] == [(stack.idp.issuer, ids[0], "clinician")]
    assert ids[0] == ids[1]


def test_next_parameter_survives_sign_in(stack: Stack) -> None:
    session, callback = npm_idp.portal_callback_url(stack.rs256.url, "demo-alice", next_path="/chart/access-log")
    response = session.get(callback, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == "/chart/access-log"


@pytest.mark.parametrize("next_path", ["//evil.example/", "/\\evil.example/", "/\t/evil.example/",
                                       "https://evil.example/"])
def test_next_parameter_cannot_leave_the_portal(stack: Stack, next_path: str) -> None:
    """Browsers read "/\\host" and "/<tab>/host" as "//host": none of these may become the redirect."""
    session = requests.Session()
    redirect = npm_idp.sign_in_with_requests(session, f"{stack.rs256.url}/auth/login?{urlencode({'next': next_path})}",
                                     "demo-alice")
    response = session.get(redirect.headers["Location"], allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- Sign-out ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_sign_out_ends_the_session_and_the_provider_session(stack: Stack, alg: str) -> None:
    portal = stack.portal(alg)
    session, callback = npm_idp.sign_in_portal(portal.url, "demo-alice")
    assert callback.status_code == 302
    assert session.get(portal.url + "/chart", timeout=10).status_code == 200
    cookie = session.cookies.get("portal")
    assert cookie

    token = csrf_token(session, portal.url + "/chart")
    response = session.post(portal.url + "/auth/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    location = response.headers["Location"]
    meta = requests.get(stack.idp.discovery_url, timeout=5).json()
    assert location.startswith(meta["end_session_endpoint"] + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["post_logout_redirect_uri"] == portal.url + "/"

    # The hint is the ID token the provider issued to this client, signed with the client's algorithm.
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=5).json())
    hint = jwt.decode(params["id_token_hint"], keys, algorithms=[alg])
    assert hint.header["alg"] == alg
    assert hint.claims["sub"] == "demo-alice"
    assert hint.claims["aud"] == f"portal-{alg.lower()}"
    assert hint.claims["iss"] == stack.idp.issuer

    # The old cookie no longer works, even replayed by someone who copied it.
    assert session.get(portal.url + "/api/v1/me", timeout=10).status_code == 401
    replay = requests.Session()
    replay.cookies.set("portal", cookie)
    assert replay.get(portal.url + "/api/v1/me", timeout=10).status_code == 401
    chart = replay.get(portal.url + "/chart", allow_redirects=False, timeout=10)
    assert chart.status_code == 302 and "/auth/signin" in chart.headers["Location"]

    # The provider accepts the hint and the registered post-logout URI and sends the browser back.
    back = npm_idp.sign_out_with_requests(session, location)
    assert back.is_redirect
    assert back.headers["Location"] == f"{portal.url}/?state={params['state']}"


def test_es256_id_tokens_are_verified(stack: Stack) -> None:
    session, callback = npm_idp.sign_in_portal(stack.es256.url, "demo-chen")
    assert callback.status_code == 302
    assert session.get(stack.es256.url + "/", timeout=10).url == stack.es256.url + "/clinician"


# --- Refusals ------------------------------------------------------------------------------------------------

def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_tampered_state_is_refused(stack: Stack) -> None:
    portal = stack.rs256
    sessions_before = npm_idp.table_count(stack.database_url, "login_session")
    session, callback = npm_idp.portal_callback_url(portal.url, "demo-alice")
    _refused(portal.url, stack, session, _with_query(callback, state="attacker-chosen-state"), 400, "state_mismatch")
    assert npm_idp.table_count(stack.database_url, "login_session") == sessions_before
    # A link this browser did not start cancels nothing: the genuine answer still signs Alice in, once.
    assert session.get(callback, timeout=10).status_code == 200
    assert session.get(portal.url + "/api/v1/me", timeout=10).json()["roles"] == ["patient"]
    replayed = session.get(callback, timeout=10)
    assert replayed.status_code == 400 and "state_mismatch" in replayed.text


def test_callback_replayed_in_a_fresh_session_is_refused(stack: Stack) -> None:
    portal = stack.rs256
    session, callback = npm_idp.portal_callback_url(portal.url, "demo-alice")
    assert session.get(callback, allow_redirects=False, timeout=10).status_code == 302

    thief = requests.Session()
    _refused(portal.url, stack, thief, callback, 400, "state_mismatch")


def test_reused_code_is_refused_by_the_provider(stack: Stack) -> None:
    """Even with a valid pending state of its own, an already redeemed code gets no tokens."""
    portal = stack.rs256
    session, callback = npm_idp.portal_callback_url(portal.url, "demo-alice")
    assert session.get(callback, allow_redirects=False, timeout=10).status_code == 302
    code = parse_qs(urlsplit(callback).query)["code"][0]

    attacker = requests.Session()
    start = attacker.get(portal.url + "/auth/login", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    fresh_state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    _refused(portal.url, stack, attacker, _with_query(callback, code=code, state=fresh_state), 400,
             "oauth_invalid_grant")


def test_provider_error_response_is_refused(stack: Stack) -> None:
    """The provider's error answer to the portal's own request (its state) ends that sign-in."""
    session = requests.Session()
    start = session.get(stack.rs256.url + "/auth/login", allow_redirects=False, timeout=10)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    callback = stack.rs256.url + "/auth/callback?" + urlencode({"error": "access_denied", "state": state})
    _refused(stack.rs256.url, stack, session, callback, 400, "provider_error")
    _refused(stack.rs256.url, stack, session, callback, 400, "state_mismatch")  # that sign-in is over


def test_an_error_answer_to_a_request_this_browser_did_not_make_is_refused(stack: Stack) -> None:
    session = requests.Session()
    session.get(stack.rs256.url + "/auth/login", allow_redirects=False, timeout=10)
    _refused(stack.rs256.url, stack, session, stack.rs256.url + "/auth/callback?error=access_denied&state=x", 400,
             "state_mismatch")


def test_unreachable_provider_gives_502(stack: Stack) -> None:
    portal = stack.rs256
    # A sign-in in flight when the provider goes away: the code cannot be redeemed.
    session, callback = npm_idp.portal_callback_url(portal.url, "demo-alice")
    stack.idp.stop()
    try:
        _refused(portal.url, stack, session, callback, 502, "provider_unreachable", timeout=30)

        # A portal process that has not yet read the discovery document cannot even start a sign-in:
        # one pointed at the stopped provider, one at a port where nothing ever listened.
        fresh = []
        for name, issuer in (("stopped", stack.idp.issuer), ("closed-port", f"http://127.0.0.1:{free_port()}")):
            port = free_port()
            env = portal_env(stack.tmp, stack.database_url, port, **npm_idp.portal_oidc_env(issuer, "portal-rs256", SECRET))
            fresh.append(PortalServer(env, port, stack.tmp / f"portal-{name}.log"))
        npm_idp.start_portals(*fresh)
        try:
            for server in fresh:
                browser = requests.Session()
                response = _refused(server.url, stack, browser, server.url + "/auth/login", 502,
                                    "provider_unreachable", timeout=30)
                assert "could not be reached" in response.text
        finally:
            npm_idp.stop_portals(*fresh)
    finally:
        stack.idp.start()

    # Back up: sign-in works again without restarting the portal.
    session, callback = npm_idp.sign_in_portal(portal.url, "demo-alice")
    assert callback.status_code == 302
    assert session.get(portal.url + "/api/v1/me", timeout=10).status_code == 200


# --- Same behaviour with the development provider ------------------------------------------------------------

@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[PortalServer]:
    """A portal using the built-in development provider (like conftest's `portal`, but stopped quickly)."""
    with npm_idp.dev_portal(tmp_path_factory.mktemp("portal-dev")) as server:
        yield server


def _comparable_chart(data: dict) -> dict:
    """The chart without what differs between two seeded databases (row ids, seeding timestamps)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in {"id", "observed_at", "created_at"}}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(data)


def _visit(url: str, session: requests.Session) -> dict:
    landing = session.get(url + "/", timeout=10)
    me = session.get(url + "/api/v1/me", timeout=10).json()
    result = {"status": landing.status_code, "path": landing.url[len(url):], "roles": me["roles"],
              "patient_id": me["patient_id"]}
    if "patient" in me["roles"]:
        result["chart"] = _comparable_chart(session.get(url + "/api/v1/me/chart", timeout=10).json())
        page = session.get(url + "/chart", timeout=10).text
        result["heading"] = page.split('<h1 id="patient-name">', 1)[1].split("</h1>", 1)[0]
    return result


@pytest.mark.parametrize("subject", sorted(DEV_LOGINS))
def test_oidc_same_behaviour(stack: Stack, portal: PortalServer, subject: str) -> None:
    """The built-in dev provider and the npm provider give the same portal behaviour for the same person."""
    dev = _visit(portal.url, sign_in(portal.url, DEV_LOGINS[subject]))
    npm_session, callback = npm_idp.sign_in_portal(stack.rs256.url, subject)
    assert callback.status_code == 302
    npm = _visit(stack.rs256.url, npm_session)
    assert npm == dev
    if subject == "demo-alice":
        assert npm["chart"]["demographics"]["family_name"] == "Moreau" and npm["chart"]["results"]
