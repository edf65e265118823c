"""Shared fixtures: the machine's PostgreSQL and Redis when the test variables name them (CI), private ones otherwise."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.portal_server import running_portal
from tests.support.services import PrivatePostgres, PrivateRedis
from tests.support.shared_services import create_database, drop_database
from tests.support.shared_services import redis_url as shared_redis_url

pytest_plugins = ["tests.support.fixtures"]  # the in-process harness: app, db, client, http, login_as, socket_client

_private_services: list[PrivatePostgres | PrivateRedis] = []


def pytest_configure(config: pytest.Config) -> None:
    """Without PORTAL_TEST_POSTGRES_URL / PORTAL_TEST_REDIS_URL (a newcomer's `make test`), the session
    starts its own PostgreSQL and Redis on free loopback ports, so every test runs everywhere.
    Portal subprocesses inherit the addresses through the environment."""
    if not os.environ.get("PORTAL_TEST_POSTGRES_URL") and PrivatePostgres.available():
        os.environ["PORTAL_TEST_POSTGRES_URL"] = _started(PrivatePostgres).url
    if not os.environ.get("PORTAL_TEST_REDIS_URL") and PrivateRedis.available():
        redis_server = _started(lambda: PrivateRedis(Path(tempfile.mkdtemp(prefix="portal-redis-"))))
        os.environ["PORTAL_TEST_REDIS_URL"] = redis_server.url


def _started(make: Callable[[], PrivatePostgres | PrivateRedis], attempts: int = 3) -> PrivatePostgres | PrivateRedis:
    """A private server, on another free port when the first one was taken meanwhile; the last failure says why."""
    for attempt in range(1, attempts + 1):
        server = make()
        _private_services.append(server)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            if attempt == attempts:
                raise pytest.UsageError(str(exc)) from None
    raise AssertionError("unreachable")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with a test marked slow start first, so the test processes (one module each) do not finish
    waiting on one long module that happened to be handed out last."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # stable: each module stays together


def pytest_unconfigure(config: pytest.Config) -> None:
    while _private_services:
        _private_services.pop().remove()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own (a fault test stops it, a role test reconfigures it), removed afterwards."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


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
    return shared_redis_url()


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    """A migrated, seeded portal served by run.py on SQLite, shared by one test module."""
    tmp = tmp_path_factory.mktemp("portal")
    with running_portal(tmp, f"sqlite:///{tmp / 'portal.db'}") as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def portal_on_each_database(request, tmp_path_factory):
    """The same portal on SQLite and on PostgreSQL: storage behaviour must not depend on the backend."""
    tmp = tmp_path_factory.mktemp("portal")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'portal.db'}"
    else:
        url = create_database()
        request.addfinalizer(lambda: drop_database(url))
    with running_portal(tmp, url) as server:
        yield server
