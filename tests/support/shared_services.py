"""The session's PostgreSQL and Redis: the machine's when PORTAL_TEST_POSTGRES_URL / PORTAL_TEST_REDIS_URL name
them (CI), or the private ones tests/conftest.py starts and names in those variables (a newcomer's `make test`).

A test takes a database of its own from ``create_database`` and gives it back with ``drop_database``."""
from __future__ import annotations

import os
import uuid

import sqlalchemy as sa

from tests.support.environment import require_service

POSTGRES_HINT = "PORTAL_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_HINT = "PORTAL_TEST_REDIS_URL=redis://127.0.0.1:6379/0"


def postgres_server_url() -> str:
    """The server's administrative URL (its `test` database); the test is skipped, or fails in CI, without one."""
    url = os.environ.get("PORTAL_TEST_POSTGRES_URL", "")
    require_service("PostgreSQL", url, POSTGRES_HINT)
    return url


def redis_url() -> str:
    url = os.environ.get("PORTAL_TEST_REDIS_URL", "")
    require_service("Redis", url, REDIS_HINT)
    return url


def create_database(prefix: str = "portal_test") -> str:
    """A fresh, empty PostgreSQL database; its URL."""
    server = postgres_server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _as_administrator(server, f'CREATE DATABASE "{name}"')
    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    _as_administrator(postgres_server_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_administrator(server: str, statement: str) -> None:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()
