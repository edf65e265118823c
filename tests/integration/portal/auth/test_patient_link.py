"""A patient's account reaches their chart: by the provider's claim (MRN or portal id) or by an administrator.

A clinic's identity provider knows a patient's MRN, not the portal's internal chart id: the patient
claim (``PORTAL_OIDC_PATIENT_CLAIM``) is matched against the chart's MRN through its blind index,
or against the chart id with ``PORTAL_OIDC_PATIENT_MATCH=id``. A wrong, unknown or malformed claim
links nothing and is no error. An administrator links or unlinks an account by MRN with a typed
reason (audited, CSRF-protected, admin only); that decision stands over the claim at later sign-ins.
A patient with no chart sees a page saying so (403 with how to get linked), never a 404.

Real HTTP against real portals signed in through the independent npm provider; two portals share
one database, one matching by MRN (the default), one by chart id.
"""
from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.support import npm_idp
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, csrf_token, portal_env, prepare_database
from tests.support.seed import ALICE, ALICE_MRN, BOB, BOB_MRN, seeded_mrn

pytestmark = pytest.mark.oidc

SECRET = secrets.token_urlsafe(32)


def _patient(name: str, claim: str | None = None) -> dict:
    account = {"name": name, "email": f"{name.split()[0].lower()}@example.test", "roles": ["patient"]}
    return {**account, "patient_id": claim} if claim is not None else account


ACCOUNTS = {
    **npm_idp.demo_accounts(demo_alice={"patient_id": ALICE_MRN}),  # as the demo accounts carry it: Alice's MRN
    "npm-lower": _patient("Lena Lower", "rc 100003"),         # the same MRN, written another way
    "npm-unknown": _patient("Uma Unknown", "RC-999999"),       # an MRN no chart has
    "npm-malformed": _patient("Mal Formed", "<b>RC-1</b>"),   # not an MRN at all
    "npm-chart-id": _patient("Ida Id", ALICE),                 # the portal's chart id, where MRNs are matched
    "npm-walk-in": _patient("Walter Walkin"),                  # no claim: an administrator links him
    "npm-misfiled": _patient("Mia Misfiled", "RC-999998"),     # a wrong MRN at the provider
    "npm-right-claim": _patient("Rita Right", seeded_mrn(3)),    # a claim an administrator overrules
    "npm-by-id": _patient("Bea Byid", BOB),                    # for the portal matching chart ids
    "npm-mrn-to-id": _patient("Milo Mrn", BOB_MRN),        # an MRN, where chart ids are matched
}


@dataclass
class Stack:
    idp: npm_idp.NpmOidcProvider
    by_mrn: PortalServer  # the default: PORTAL_OIDC_PATIENT_MATCH unset
    by_id: PortalServer   # PORTAL_OIDC_PATIENT_MATCH=id

    @property
    def database_url(self) -> str:
        return self.by_mrn.env["PORTAL_DATABASE_URL"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("patient-link")
    ports = (free_port(), free_port())
    clients = [npm_idp.portal_client(f"portal-{name}", SECRET, f"http://127.0.0.1:{port}")
               for name, port in zip(("mrn", "id"), ports, strict=True)]
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    with npm_idp.NpmOidcProvider(clients, ACCOUNTS) as idp:
        by_mrn = PortalServer(
            portal_env(tmp, database_url, ports[0], **npm_idp.portal_oidc_env(idp.issuer, "portal-mrn", SECRET)),
            ports[0], tmp / "by-mrn.log")
        by_id = PortalServer(portal_env(tmp, database_url, ports[1], **npm_idp.portal_oidc_env(idp.issuer, "portal-id", SECRET),
                                        PORTAL_OIDC_PATIENT_MATCH="id"), ports[1], tmp / "by-id.log")
        prepare_database(by_mrn.env, patients=8)
        npm_idp.start_portals(by_mrn, by_id)
        try:
            yield Stack(idp, by_mrn, by_id)
        finally:
            npm_idp.stop_portals(by_mrn, by_id)


# --- helpers ---------------------------------------------------------------------------------------------------

def signed_in(portal: PortalServer, login: str) -> requests.Session:
    session, response = npm_idp.sign_in_portal(portal.url, login)
    assert response.status_code == 302, f"sign-in as {login} failed: {response.text[:300]}"
    return session


def me(portal: PortalServer, session: requests.Session) -> dict:
    return session.get(f"{portal.url}/api/v1/me", timeout=10).json()


def chart_mrn(portal: PortalServer, session: requests.Session) -> str:
    answer = session.get(f"{portal.url}/api/v1/me/chart", timeout=10)
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()["demographics"]["mrn"]


def sign_in_event(stack: Stack, user_id: str) -> dict:
    return json.loads(audit_rows(stack.database_url, action="signin.success", actor_id=user_id)[-1]["details"])


def assert_not_linked_everywhere(portal: PortalServer, session: requests.Session) -> None:
    """Every patient page says "not linked" with 403 and how to get linked; the API answers 403 no_chart."""
    reference = me(portal, session)["id"][:8]
    for path in ("/", "/chart", "/chart/access-log", "/chart/fhir", "/me/disclosures"):
        page = session.get(portal.url + path, timeout=10)
        assert page.status_code == 403, (path, page.status_code)
        assert 'data-error-code="no_chart"' in page.text and "not linked to a chart" in page.text, path
        assert f"account reference {reference}" in page.text, path
    api = session.get(f"{portal.url}/api/v1/me/chart", timeout=10)
    assert api.status_code == 403 and api.json()["error"]["code"] == "no_chart"
    assert reference in api.json()["error"]["message"]
    messages = session.get(f"{portal.url}/messages", timeout=10)
    assert messages.status_code == 200 and 'data-testid="not-linked"' in messages.text
    assert "Message my care team" not in messages.text
    start = session.post(f"{portal.url}/messages/start", timeout=10,
                         data={"csrf_token": csrf_token(session, f"{portal.url}/messages")})
    assert start.status_code == 403 and 'data-error-code="no_chart"' in start.text


def admin_page(stack: Stack, admin: requests.Session, reference: str = "") -> str:
    page = admin.get(f"{stack.by_mrn.url}/admin/patient-accounts", params={"account": reference} if reference else None,
                     timeout=10)
    assert page.status_code == 200, page.text[:300]
    return page.text


def link_state(stack: Stack, admin: requests.Session, user_id: str) -> str:
    row = re.search(rf'<tr data-account="{user_id}">(.*?)</tr>', admin_page(stack, admin, user_id[:8]), re.S)
    assert row, "the account is not on the administrator's page"
    return re.search(r'<td data-link="[a-z]+">(.*?)</td>', row.group(1), re.S).group(1).strip()


def change_link(stack: Stack, admin: requests.Session, user_id: str, **form: str) -> requests.Response:
    """Submit the link form (``mrn`` given) or the unlink form, with the page's CSRF token unless given."""
    action = "chart-link" if "mrn" in form else "chart-link/remove"
    data = {"csrf_token": csrf_token(admin, f"{stack.by_mrn.url}/admin/patient-accounts"), **form}
    return admin.post(f"{stack.by_mrn.url}/admin/users/{user_id}/{action}", data=data, allow_redirects=False,
                      timeout=10)


# --- the claim ------------------------------------------------------------------------------------------------

def test_the_patient_claim_is_matched_against_the_charts_mrn(stack: Stack) -> None:
    alice = signed_in(stack.by_mrn, "demo-alice")  # the provider's claim is ALICE_MRN
    assert me(stack.by_mrn, alice)["patient_id"] == ALICE
    chart = alice.get(f"{stack.by_mrn.url}/chart", timeout=10)
    assert chart.status_code == 200 and "Alice Moreau" in chart.text
    assert sign_in_event(stack, me(stack.by_mrn, alice)["id"]) == {"chart_link": "claim"}

    lena = signed_in(stack.by_mrn, "npm-lower")  # "rc 100003": the blind index normalises MRNs
    assert chart_mrn(stack.by_mrn, lena) == seeded_mrn(2)


@pytest.mark.parametrize("login", ["npm-unknown", "npm-malformed", "npm-chart-id", "npm-walk-in"])
def test_a_wrong_unknown_or_missing_claim_links_nothing_and_is_no_error(stack: Stack, login: str) -> None:
    session = signed_in(stack.by_mrn, login)
    account = me(stack.by_mrn, session)
    assert account["roles"] == ["patient"] and account["patient_id"] is None
    assert_not_linked_everywhere(stack.by_mrn, session)
    assert sign_in_event(stack, account["id"]) == {"chart_link": "none"}
    assert not audit_rows(stack.database_url, action="signin.failure", actor_id=account["id"])


def test_the_setting_chooses_matching_by_chart_id(stack: Stack) -> None:
    bea = signed_in(stack.by_id, "npm-by-id")  # the claim is Bob's chart id
    assert me(stack.by_id, bea)["patient_id"] == BOB and chart_mrn(stack.by_id, bea) == BOB_MRN
    milo = signed_in(stack.by_id, "npm-mrn-to-id")  # an MRN is not a chart id
    assert me(stack.by_id, milo)["patient_id"] is None
    assert_not_linked_everywhere(stack.by_id, milo)


# --- the administrator ----------------------------------------------------------------------------------------

def test_an_administrators_link_reaches_the_chart_at_once_and_survives_the_next_sign_in(stack: Stack) -> None:
    walter = signed_in(stack.by_mrn, "npm-walk-in")
    walter_id = me(stack.by_mrn, walter)["id"]
    adam = signed_in(stack.by_mrn, "demo-adam")
    adam_id = me(stack.by_mrn, adam)["id"]
    assert link_state(stack, adam, walter_id) == "Not linked"
    reason = "Identity checked at the front desk with photo ID"

    linked = change_link(stack, adam, walter_id, mrn=seeded_mrn(4), reason=reason)
    assert linked.status_code == 302, linked.text[:300]
    assert "is linked to the chart" in adam.get(stack.by_mrn.url + linked.headers["Location"], timeout=10).text
    assert link_state(stack, adam, walter_id) == "Linked by an administrator"
    assert chart_mrn(stack.by_mrn, walter) == seeded_mrn(4)  # his open session sees it at once

    chart_id = me(stack.by_mrn, walter)["patient_id"]
    events = audit_rows(stack.database_url, actor_id=adam_id, resource_id=walter_id)
    assert [(e["action"], e["outcome"], e["patient_id"], e["reason"]) for e in events] == [
        ("admin.patient.linked", "allowed", chart_id, reason)]
    decisions = [json.loads(e["details"]) for e in audit_rows(stack.database_url, action="admin.patient_links",
                                                              actor_id=adam_id, outcome="allowed")]
    assert {"change": "link", "user": walter_id} in decisions

    # The provider still sends no claim: the administrator's link stands.
    walter_again = signed_in(stack.by_mrn, "npm-walk-in")
    assert chart_mrn(stack.by_mrn, walter_again) == seeded_mrn(4)
    assert sign_in_event(stack, walter_id) == {"chart_link": "admin"}
    # The link is in the patient's accounting of disclosures, with the administrator and the reason.
    report = walter_again.get(f"{stack.by_mrn.url}/me/disclosures", timeout=30)
    assert report.status_code == 200
    line = re.search(r"<td>Adam Novak</td><td>Admin</td><td>Linked to a portal account</td>\s*<td>([^<]*)</td>",
                     report.text)
    assert line and line.group(1).strip() == reason


def test_an_administrators_decision_stands_over_a_wrong_or_right_claim(stack: Stack) -> None:
    adam = signed_in(stack.by_mrn, "demo-adam")
    mia = signed_in(stack.by_mrn, "npm-misfiled")  # her provider has a wrong MRN
    mia_id = me(stack.by_mrn, mia)["id"]
    assert change_link(stack, adam, mia_id, mrn="rc-100006", reason="Provider record has a typo").status_code == 302
    assert chart_mrn(stack.by_mrn, signed_in(stack.by_mrn, "npm-misfiled")) == seeded_mrn(5)

    rita = signed_in(stack.by_mrn, "npm-right-claim")  # linked by her claim ...
    rita_id = me(stack.by_mrn, rita)["id"]
    first_chart = me(stack.by_mrn, rita)["patient_id"]
    assert chart_mrn(stack.by_mrn, rita) == seeded_mrn(3)
    assert link_state(stack, adam, rita_id) == "Linked by the sign-in claim"
    # ... moved to another chart, then unlinked by the administrator: each chart gets its own event.
    assert change_link(stack, adam, rita_id, mrn=seeded_mrn(6), reason="Merged duplicate record").status_code == 302
    second_chart = me(stack.by_mrn, rita)["patient_id"]
    assert chart_mrn(stack.by_mrn, rita) == seeded_mrn(6)
    unlinked = change_link(stack, adam, rita_id, reason="Account belongs to a relative")
    assert unlinked.status_code == 302
    assert link_state(stack, adam, rita_id) == "Not linked (unlinked by an administrator)"
    assert_not_linked_everywhere(stack.by_mrn, rita)
    events = audit_rows(stack.database_url, resource_id=rita_id, resource_type="user")
    assert [(e["action"], e["patient_id"], e["reason"]) for e in events] == [
        ("admin.patient.unlinked", first_chart, "Merged duplicate record"),
        ("admin.patient.linked", second_chart, "Merged duplicate record"),
        ("admin.patient.unlinked", second_chart, "Account belongs to a relative"),
    ]

    # Her claim still names RC-100004, but the administrator's unlinking stands ...
    rita_again = signed_in(stack.by_mrn, "npm-right-claim")
    assert me(stack.by_mrn, rita_again)["patient_id"] is None
    # ... even across a sign-in without the patient role (removed at the provider for a while, then back).
    stack.idp.accounts["npm-right-claim"]["roles"] = []
    stack.idp.restart()
    try:
        assert me(stack.by_mrn, signed_in(stack.by_mrn, "npm-right-claim"))["roles"] == []
    finally:
        stack.idp.accounts["npm-right-claim"]["roles"] = ["patient"]
        stack.idp.restart()
    assert me(stack.by_mrn, signed_in(stack.by_mrn, "npm-right-claim"))["patient_id"] is None
    assert link_state(stack, adam, rita_id) == "Not linked (unlinked by an administrator)"


@pytest.mark.parametrize("form, status, code, message", [
    ({"mrn": "<RC-1>", "reason": "Checked photo ID at the desk"}, 400, "bad_mrn", "An MRN has 3 to 32 letters"),
    ({"mrn": "", "reason": "Checked photo ID at the desk"}, 400, "bad_mrn", "An MRN has 3 to 32 letters"),
    ({"mrn": "RC-999999", "reason": "Checked photo ID at the desk"}, 400, "unknown_mrn", "No patient has that MRN"),
    ({"mrn": seeded_mrn(7), "reason": "short"}, 400, "bad_reason", "Give the reason in 10 to 300 characters"),
    ({"mrn": seeded_mrn(7), "reason": "Checked photo ID\x00 at the desk"}, 400, "bad_reason", "on one line"),
    ({"mrn": seeded_mrn(7)}, 400, "bad_reason", "Give the reason"),
    ({"reason": "x"}, 400, "bad_reason", "Give the reason"),
    ({"mrn": seeded_mrn(7), "reason": "Checked photo ID at the desk", "csrf_token": "forged"}, 400, "csrf", "form expired"),
])
def test_bad_link_requests_are_refused_with_a_message_and_change_nothing(stack: Stack, form: dict, status: int,
                                                                         code: str, message: str) -> None:
    adam = signed_in(stack.by_mrn, "demo-adam")
    uma = signed_in(stack.by_mrn, "npm-unknown")
    uma_id = me(stack.by_mrn, uma)["id"]
    refused = change_link(stack, adam, uma_id, **form)
    assert refused.status_code == status and f'data-error-code="{code}"' in refused.text, refused.text[:400]
    assert message in refused.text
    assert me(stack.by_mrn, uma)["patient_id"] is None and link_state(stack, adam, uma_id) == "Not linked"
    assert not audit_rows(stack.database_url, resource_id=uma_id, resource_type="user")
    if code != "csrf":
        refusal = audit_rows(stack.database_url, action="request.refused", actor_id=me(stack.by_mrn, adam)["id"])[-1]
        assert (refusal["outcome"], refusal["reason"]) == ("denied", code)


def test_only_patient_accounts_are_linked(stack: Stack) -> None:
    adam = signed_in(stack.by_mrn, "demo-adam")
    chen_id = me(stack.by_mrn, signed_in(stack.by_mrn, "demo-chen"))["id"]
    refused = change_link(stack, adam, chen_id, mrn=seeded_mrn(7), reason="Checked photo ID at the desk")
    assert refused.status_code == 400 and 'data-error-code="not_a_patient"' in refused.text
    assert f'data-account="{chen_id}"' not in admin_page(stack, adam)
    malformed = change_link(stack, adam, "not-a-user", mrn=seeded_mrn(7), reason="Checked photo ID at the desk")
    assert malformed.status_code == 400 and 'data-error-code="malformed_id"' in malformed.text
    lookup = adam.get(f"{stack.by_mrn.url}/admin/patient-accounts", params={"account": "%' OR 1=1"}, timeout=10)
    assert lookup.status_code == 400 and 'data-error-code="bad_reference"' in lookup.text


@pytest.mark.parametrize("login", ["demo-chen", "demo-cora", "demo-alice"])
def test_only_administrators_see_or_change_links_and_refusals_are_audited(stack: Stack, login: str) -> None:
    other = signed_in(stack.by_mrn, login)
    other_id = me(stack.by_mrn, other)["id"]
    uma = signed_in(stack.by_mrn, "npm-unknown")
    uma_id = me(stack.by_mrn, uma)["id"]
    assert other.get(f"{stack.by_mrn.url}/admin/patient-accounts", timeout=10).status_code == 403
    token = csrf_token(other, f"{stack.by_mrn.url}/auth/sessions")
    for action, form in (("chart-link", {"mrn": seeded_mrn(7)}), ("chart-link/remove", {})):
        refused = other.post(f"{stack.by_mrn.url}/admin/users/{uma_id}/{action}", allow_redirects=False, timeout=10,
                             data={"csrf_token": token, "reason": "Checked photo ID at the desk", **form})
        assert refused.status_code == 403
    denied = audit_rows(stack.database_url, action="admin.patient_links", actor_id=other_id)
    assert [(row["outcome"], json.loads(row["details"]).get("change")) for row in denied] == [
        ("denied", None), ("denied", "link"), ("denied", "unlink")]
    assert me(stack.by_mrn, uma)["patient_id"] is None
    assert not audit_rows(stack.database_url, resource_id=uma_id, resource_type="user")
