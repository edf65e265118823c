"""Pytest fixtures of the in-process harness (tests/support/harness.py), registered by tests/conftest.py.

- ``app`` / ``app_on_each_database``: the seeded portal on SQLite / on SQLite and then PostgreSQL,
  built once per session per database;
- ``db``: the test's connection; everything the test (or the app) writes is rolled back afterwards;
- ``client``: a Flask test client; ``http``: the same with the ``requests``-style calls;
- ``configure(name=value)``: changed settings for this test only;
- ``portal_in_process``: ``.url`` for ``requests`` (sign-in through the provider's forms included),
  ``.database`` (the connection), ``.env``: for tests written against a real ``PortalServer``;
  ``portal_in_process_for_module[_on_each_database]``: the same, rolled back once per module;
- ``login_as("dr.chen")``: a new signed-in ``HttpClient`` (``.flask`` is its Flask test client);
- ``socket_client(http_client, namespace)``: a Socket.IO test client with that client's cookies.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_socketio import SocketIOTestClient

from tests.support import harness
from tests.support.in_process_http import HttpClient
from tests.support.shared_services import create_database, drop_database

_built: dict[str, harness.HarnessApp] = {}


def _harness_app(backend: str, tmp_path_factory: pytest.TempPathFactory) -> harness.HarnessApp:
    """Built on first use and kept for the session: migrating and seeding happen once per database."""
    if backend not in _built:
        secrets = tmp_path_factory.getbasetemp() / "harness-secrets"
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('harness-sqlite') / 'portal.db'}"
        else:
            url = create_database("portal_harness")
        try:
            _built[backend] = harness.build(secrets, url)
        except BaseException:
            if backend == "postgres":
                drop_database(url)
            raise
    return _built[backend]


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _built:
        backend, built = _built.popitem()
        built.app.extensions["portal.engine"].dispose()
        built.app.extensions["portal.audit_store"].engine.dispose()
        if backend == "postgres":
            drop_database(built.database_url)


@pytest.fixture(autouse=True)
def _harness_in_charge() -> None:
    """Before each test, an app whose transaction is open (a module's) takes back the process-wide state."""
    for built in _built.values():
        if built.connection is not None:
            built.activate()


@pytest.fixture
def harness_app(tmp_path_factory) -> harness.HarnessApp:
    return _harness_app("sqlite", tmp_path_factory)


@pytest.fixture(params=["sqlite", "postgres"])
def harness_app_on_each_database(request, tmp_path_factory) -> harness.HarnessApp:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    return _harness_app(request.param, tmp_path_factory)


@pytest.fixture
def db(harness_app: harness.HarnessApp) -> Iterator[sa.Connection]:
    with harness_app.rolled_back() as connection:
        yield connection


@pytest.fixture
def app(harness_app: harness.HarnessApp, db) -> Flask:
    return harness_app.app


@pytest.fixture
def portal_in_process(harness_app: harness.HarnessApp, db) -> harness.InProcessPortal:
    """Stands in for a ``PortalServer``: ``requests`` to its ``url`` (sign_in, break_glass, ...) reach the app."""
    return harness.InProcessPortal(harness.BASE_URL, harness_app.env, db, harness_app.app, harness_app)


def _module_portal(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.InProcessPortal]:
    built = _harness_app(backend, tmp_path_factory)
    with built.rolled_back() as connection:
        yield harness.InProcessPortal(harness.BASE_URL, built.env, connection, built.app, built)


@pytest.fixture(scope="module")
def portal_in_process_for_module(tmp_path_factory) -> Iterator[harness.InProcessPortal]:
    """Like ``portal_in_process``, but one transaction for the whole module, rolled back after its last test:
    for modules whose tests share what earlier fixtures did (sign-ins, accesses), as with a module's real portal."""
    yield from _module_portal("sqlite", tmp_path_factory)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def portal_in_process_for_module_on_each_database(request, tmp_path_factory) -> Iterator[harness.InProcessPortal]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    yield from _module_portal(request.param, tmp_path_factory)


@pytest.fixture
def configure(harness_app: harness.HarnessApp, db) -> Callable[..., object]:
    """``configure(search_distinct_patients_per_hour=2)``: this test's app runs with changed settings."""
    return harness_app.configure


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def http(client: FlaskClient) -> HttpClient:
    return HttpClient(client)


@pytest.fixture
def login_as(app: Flask) -> Callable[[str], HttpClient]:
    def sign_in(login: str) -> HttpClient:
        return HttpClient(harness.sign_in_client(app.test_client(), login))
    return sign_in


@pytest.fixture
def socket_client(app: Flask) -> Iterator[Callable[..., SocketIOTestClient]]:
    opened: list[SocketIOTestClient] = []

    def connect(http_client, namespace: str | None = None, **kwargs) -> SocketIOTestClient:
        """``http_client``: an ``HttpClient`` (login_as), a Flask test client, a requests session or None."""
        flask_client = http_client.flask if isinstance(http_client, HttpClient) else http_client
        opened.append(harness.socket_client(app, flask_client, namespace, **kwargs))
        return opened[-1]
    yield connect
    for sio in opened:
        if sio.is_connected():
            sio.disconnect()
