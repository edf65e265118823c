"""Shared fixtures: real services where the machine has them, with skip reasons that say how to enable them."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get("PORTAL_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, enable_hint: str) -> None:
    """Skip (or fail in CI) when a service a test needs is not configured or not reachable."""
    if not url:
        reason = f"{name} tests need {enable_hint}"
        if IN_CI:
            pytest.fail(f"CI must run the {name} tests: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_service(
        "PostgreSQL",
        POSTGRES_URL,
        "PORTAL_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    )
    url = _create_database(f"portal_test_{uuid.uuid4().hex[:12]}")
    try:
        yield url
    finally:
        _drop_database(url)


def _create_database(name: str) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    import sqlalchemy as sa

    name = sa.engine.make_url(url).database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'portal.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Runs a storage test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_URL, "PORTAL_TEST_REDIS_URL=redis://127.0.0.1:6379/0")
    return REDIS_URL


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    """A migrated, seeded portal served by run.py on SQLite, shared by one test module."""
    from tests.support.portal_server import running_portal

    tmp = tmp_path_factory.mktemp("portal")
    with running_portal(tmp, f"sqlite:///{tmp / 'portal.db'}") as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def portal_on_each_database(request, tmp_path_factory):
    """The same portal on SQLite and on PostgreSQL: storage behaviour must not depend on the backend."""
    from tests.support.portal_server import running_portal

    tmp = tmp_path_factory.mktemp("portal")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'portal.db'}"
    else:
        require_service("PostgreSQL", POSTGRES_URL,
                        "PORTAL_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/test")
        url = _create_database(f"portal_test_{uuid.uuid4().hex[:12]}")
        request.addfinalizer(lambda: _drop_database(url))
    with running_portal(tmp, url) as server:
        yield server
