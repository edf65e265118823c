"""The Compose stack's database roles, run on a private PostgreSQL as the postgres image would run them.

deploy/compose/make-secrets.sh writes the passwords and URLs; deploy/compose/initdb/10-portal-roles.sh
creates portal_owner and portal_app; the migration runs as the owner (compose's `migrate` service) and a
portal serves as the app role (the workers), with password authentication on, so the URLs the script
wrote are the ones PostgreSQL accepts. The app role reads and writes records and appends to the audit
log, and cannot edit it, truncate it, switch its triggers off, or change the schema.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import requests
import sqlalchemy as sa

from tests.support.environment import ROOT, free_port
from tests.support.portal_server import PortalServer, flask_command, portal_env, sign_in
from tests.support.seed import ALICE
from tests.support.services import PrivatePostgres


def _on_this_machine(url: str, port: int) -> str:
    """The URL the script wrote for the Compose host `db`, pointed at the private server."""
    return url.strip().replace("@db:5432/", f"@127.0.0.1:{port}/")


def _require_password_auth(cluster: PrivatePostgres) -> None:
    """Only the superuser keeps trust (the test's own checks); every other role must give its password."""
    (cluster.data / "pg_hba.conf").write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                                              "host all all 127.0.0.1/32 scram-sha-256\n")
    subprocess.run(["runuser", "-u", "postgres", "--", cluster.pg_ctl, "-D", str(cluster.data), "reload"]
                   if os.geteuid() == 0 else [cluster.pg_ctl, "-D", str(cluster.data), "reload"], check=True,
                   capture_output=True)


def _refused(engine: sa.Engine, statement: str) -> str:
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as refused:
        conn.execute(sa.text(statement))
    return str(refused.value.orig)


@pytest.mark.postgres
def test_migrations_run_as_the_owner_and_workers_as_a_role_that_owns_nothing(private_postgres, tmp_path):
    cluster = private_postgres
    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy/compose/make-secrets.sh"), str(secrets)], check=True, capture_output=True)
    superuser = sa.create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    with superuser.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE portal"))  # what POSTGRES_DB=portal makes before the init scripts
    psql = shutil.which("psql")
    assert psql, "psql is part of the PostgreSQL client tools"
    subprocess.run(["sh", str(ROOT / "deploy/compose/initdb/10-portal-roles.sh")], check=True, capture_output=True,
                   env={**os.environ, "POSTGRES_USER": "postgres", "POSTGRES_DB": "portal", "PGHOST": "127.0.0.1",
                        "PGPORT": str(cluster.port), "DATABASE_OWNER_PASSWORD_FILE": str(secrets / "database_owner_password"),
                        "DATABASE_APP_PASSWORD_FILE": str(secrets / "database_app_password")})
    _require_password_auth(cluster)
    owner_url = _on_this_machine((secrets / "database_url_owner").read_text(), cluster.port)
    app_url = _on_this_machine((secrets / "database_url_app").read_text(), cluster.port)

    port = free_port()
    env = portal_env(tmp_path / "portal", app_url, port)
    flask_command({**env, "PORTAL_DATABASE_URL": owner_url}, "init-db")  # compose's `migrate` service
    flask_command(env, "seed-demo", "--patients", "3")  # written by the app role, as the workers write

    portal_db = sa.engine.make_url(cluster.url).set(database="portal")
    with sa.create_engine(portal_db).connect() as conn:
        owners = set(conn.execute(sa.text("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert owners == {"portal_owner"}

    with PortalServer(env, port, tmp_path / "portal.log") as portal:
        assert requests.get(portal.url + "/readyz", timeout=10).json()["status"] == "ready"
        chen = sign_in(portal.url, "dr.chen")
        assert chen.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=10).status_code == 200
    assert "intact" in flask_command(env, "audit-verify")

    app = sa.create_engine(app_url)
    try:
        assert "append-only" in _refused(app, "UPDATE audit_entry SET reason = 'edited'")
        assert "append-only" in _refused(app, "DELETE FROM audit_entry")
        assert "must be owner" in _refused(app, "ALTER TABLE audit_entry DISABLE TRIGGER ALL")
        assert "must be owner" in _refused(app, "DROP TABLE audit_tree_checkpoint")
        assert "permission denied" in _refused(app, "TRUNCATE audit_entry")
        assert "permission denied" in _refused(app, "CREATE TABLE shadow (id int)")
        assert "permission denied" in _refused(app, "SET session_replication_role = replica")
    finally:
        app.dispose()
        superuser.dispose()
