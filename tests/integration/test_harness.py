"""The in-process harness itself (tests/support/harness.py): what a test writes is gone for the next one,
on both databases, and its shortcuts go through the portal's own code."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.harness import BASE_URL, SIGN_IN_PATH
from tests.support.portal_server import sign_in
from tests.support.seed import ALICE


@pytest.fixture
def harness_app(harness_app_on_each_database):
    return harness_app_on_each_database


def _counts(connection: sa.Connection) -> tuple[int, int]:
    return (connection.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one(),
            connection.execute(sa.text("SELECT count(*) FROM login_session")).scalar_one())


def test_everything_a_test_writes_is_rolled_back_audit_log_included(harness_app):
    with harness_app.rolled_back() as first:
        seeded = _counts(first)
        chen = harness_app.app.test_client()
        assert chen.get(SIGN_IN_PATH + "dr.chen").status_code == 302
        assert chen.get(f"/patients/{ALICE}").status_code == 200
        entries, sessions = _counts(first)
        assert entries >= seeded[0] + 2 and sessions == seeded[1] + 1  # signin.success, chart.read; one session
    with harness_app.rolled_back() as second:
        assert _counts(second) == seeded


def test_login_as_signs_in_through_the_portals_session_and_audit_code(login_as, db):
    alice = login_as("alice")
    me = alice.get("/api/v1/me").json()
    assert me["patient_id"] == ALICE
    signed_in = db.execute(sa.text("SELECT * FROM audit_entry WHERE action = 'signin.success' AND actor_id = :id"),
                           {"id": me["id"]}).mappings().all()
    assert len(signed_in) == 1 and signed_in[0]["reason"] == "roles: patient"
    assert db.execute(sa.text("SELECT count(*) FROM login_session WHERE user_id = :id AND ended_at IS NULL"),
                      {"id": me["id"]}).scalar_one() == 1


def test_requests_to_the_base_url_sign_in_through_the_development_provider(portal_in_process):
    """The full authorization code flow (discovery, the provider's form, the token exchange) in this process."""
    session = sign_in(BASE_URL, "dr.chen")
    assert session.get(f"{BASE_URL}/api/v1/me", timeout=10).json()["roles"] == ["clinician"]


def test_the_socket_client_shares_the_signed_in_cookies(login_as, socket_client):
    assert socket_client(login_as("cora"), "/audit").is_connected("/audit")
    assert not socket_client(login_as("dr.chen"), "/audit").is_connected("/audit")
