"""Readiness and lock waits of the audit log on PostgreSQL, over real HTTP (issue 12, item 5).

As found: /readyz said ready while every audit append failed (an INSERT trigger that raises, a revoked
INSERT privilege), because it only read the head; and a held append lock hung every PHI request
indefinitely. The portal here connects as a role that does not own the tables, as a deployment
with separate migration and application roles does.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa

from audit.store import ADVISORY_LOCK_KEY
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, portal_env, prepare_database, sign_in
from tests.support.seed import ALICE
from tests.support.shared_services import create_database, drop_database, postgres_server_url

pytestmark = pytest.mark.postgres

NOT_READY_AFTER_FAILURE_SECONDS = 2
REFUSE_INSERTS = (
    "CREATE FUNCTION refuse_audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'audit inserts refused'; END $$",
    "CREATE TRIGGER refuse_audit_insert BEFORE INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION refuse_audit_insert()",
)
ALLOW_INSERTS = ("DROP TRIGGER refuse_audit_insert ON audit_entry", "DROP FUNCTION refuse_audit_insert()")
REFUSE_CHART_READS = (
    "CREATE FUNCTION refuse_chart_reads() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN IF NEW.action = 'chart.read' THEN RAISE EXCEPTION 'chart reads refused'; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER refuse_chart_reads BEFORE INSERT ON audit_entry FOR EACH ROW EXECUTE FUNCTION refuse_chart_reads()",
)
ALLOW_CHART_READS = ("DROP TRIGGER refuse_chart_reads ON audit_entry", "DROP FUNCTION refuse_chart_reads()")


def _as_owner(database_url: str, *statements: str) -> None:
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[PortalServer, str, str]]:
    """(portal, owner's database URL, application role): migrated and seeded by the owner, served as the role."""
    postgres_server_url()  # skipped (failed in CI) without PostgreSQL
    tmp = tmp_path_factory.mktemp("readiness")
    owner_url = create_database()
    role = f"portal_app_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = portal_env(tmp, owner_url, port, PORTAL_AUDIT_LOCK_TIMEOUT_SECONDS="1",
                     PORTAL_AUDIT_FAILURE_NOT_READY_SECONDS=str(NOT_READY_AFTER_FAILURE_SECONDS))
    prepare_database(env, patients=4)
    database = sa.engine.make_url(owner_url).database
    _as_owner(owner_url, f'CREATE ROLE "{role}" LOGIN', f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
              f'GRANT USAGE ON SCHEMA public TO "{role}"',
              f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
              f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    env["PORTAL_DATABASE_URL"] = sa.engine.make_url(owner_url).set(username=role).render_as_string(hide_password=False)
    try:
        with PortalServer(env, port, tmp / "server.log") as server:
            yield server, owner_url, role
    finally:
        _as_owner(owner_url, f'DROP OWNED BY "{role}"')
        drop_database(owner_url)
        _as_owner(postgres_server_url(), f'DROP ROLE IF EXISTS "{role}"')


def _readiness(portal: PortalServer) -> tuple[int, dict]:
    response = requests.get(f"{portal.url}/readyz", timeout=60)
    return response.status_code, response.json()["checks"]


def _ready_again(portal: PortalServer) -> bool:
    """Ready once the not-ready period after the latest failed append has passed (polled, not slept)."""
    deadline = time.monotonic() + NOT_READY_AFTER_FAILURE_SECONDS + 30
    while time.monotonic() < deadline:
        if _readiness(portal)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def test_ready_while_appends_work(stack):
    portal, _, _ = stack
    assert _readiness(portal) == (200, {"database": "ok", "audit_store": "ok", "keyring": "ok"})


def test_not_ready_while_an_insert_trigger_refuses_audit_entries(stack):
    portal, owner_url, _ = stack
    _as_owner(owner_url, *REFUSE_INSERTS)
    try:
        status, checks = _readiness(portal)
        assert (status, checks["audit_store"], checks["database"]) == (503, "failed", "ok")
    finally:
        _as_owner(owner_url, *ALLOW_INSERTS)
    assert _readiness(portal)[0] == 200


def test_not_ready_while_the_portal_may_not_insert_audit_entries(stack):
    portal, owner_url, role = stack
    chen = sign_in(portal.url, "dr.chen")
    _as_owner(owner_url, f'REVOKE INSERT ON audit_entry FROM "{role}"')
    try:
        status, checks = _readiness(portal)
        assert (status, checks["audit_store"]) == (503, "failed")
        refused = chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=60)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_unavailable"
    finally:
        _as_owner(owner_url, f'GRANT INSERT ON audit_entry TO "{role}"')
    assert chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=60).status_code == 200
    assert _ready_again(portal)


def test_a_held_append_lock_fails_closed_instead_of_hanging(stack):
    """Another connection holds the append lock: a chart read answers 503 without PHI, then works once it is free."""
    portal, owner_url, _ = stack
    chen = sign_in(portal.url, "dr.chen")
    holder_engine = sa.create_engine(owner_url)
    holder = holder_engine.connect()
    try:
        holder.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK_KEY)))
        refused = chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=120)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_unavailable"
        assert "Moreau" not in refused.text
        assert _readiness(portal)[0] == 503
    finally:
        holder.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
        holder.close()
        holder_engine.dispose()
    chart = chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=60)
    assert chart.status_code == 200 and "Moreau" in chart.text


def test_not_ready_while_real_appends_fail_even_when_a_rehearsal_passes(stack):
    """Only some entries are refused (here chart reads): the rehearsal inserts another kind and passes, and
    other requests' entries are appended meanwhile, but the failed append of a real request takes the
    worker out of rotation for the configured period."""
    portal, owner_url, _ = stack
    chen = sign_in(portal.url, "dr.chen")
    _as_owner(owner_url, *REFUSE_CHART_READS)
    try:
        refused = chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=60)
        assert refused.status_code == 503 and "Moreau" not in refused.text
        assert chen.get(f"{portal.url}/api/v1/me", timeout=60).status_code == 200
        assert chen.get(f"{portal.url}/clinician", timeout=60).status_code == 200  # audited, appended
        status, checks = _readiness(portal)
        assert (status, checks["audit_store"], checks["database"]) == (503, "failed", "ok")
    finally:
        _as_owner(owner_url, *ALLOW_CHART_READS)
    assert chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=60).status_code == 200
    assert _ready_again(portal)
