"""The portal in this process, for tests that need no real server: fast, and rolled back after every test.

One application per database (SQLite file, PostgreSQL database) is built by the real factory
(``portal.create_app``), migrated and seeded once per test session. Each test (or, for modules whose tests
share earlier fixtures' work, each module) then runs inside one outer transaction on one connection that
nothing commits:

- the request session (``portal.db.db_session``) joins it with ``join_transaction_mode="create_savepoint"``,
  so the portal's own commits and rollbacks become RELEASE / ROLLBACK TO SAVEPOINT;
- the audit store's engine is swapped for ``SavepointEngine`` over the same connection: its append
  transaction (serialising lock, head read, insert, commit) runs in a savepoint too. The log and its tree are
  therefore exactly as a real append leaves it, and rolled back with everything else.
  One difference from production, where the audit store has its own connection: an audit entry appended
  inside a request session's savepoint goes when that session rolls back. Sessions that wrote nothing
  release instead (``_ReleasingSession``); a write that fails after its audit entry needs a real process.

At the end the outer transaction is rolled back: the next test sees the seed again.

Two ways in. ``login_as`` skips the provider's round trip but not the portal's sign-in code: it calls
the functions the OIDC callback calls once it has verified the ID token (``upsert_user``,
``start_session`` and the ``signin.success`` audit record) with the development provider's claims for
that demo user, through a test-only route this module adds to the application. ``WsgiTransport`` answers
``requests`` calls to ``BASE_URL`` with the app itself, so tests written against a real portal (sign-in
through the provider's forms, step-up, break-glass) and the portal's own OpenID client run unchanged.

What an in-process app cannot show (several workers, Redis, eventlet, an external provider, raw bytes
on the socket, Socket.IO's origin check, the proxy, time-outs in real time) stays with
tests/support/portal_server.py.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from flask import Flask, redirect, url_for
from flask.testing import FlaskClient
from flask_socketio import SocketIOTestClient
from sqlalchemy.orm import Session

from portal import create_app, services
from portal.access import record
from portal.actions import Action
from portal.auth.identity import chart_link, upsert_user
from portal.auth.sessions import start_session
from portal.config import Settings
from portal.crypto import Keyring, active_keyring, install_keyring
from portal.db import bind_engine, db_session
from portal.devidp.server import user_claims
from portal.devidp.users import DEMO_USERS
from portal.extensions import limiter, oauth, socketio
from tests.support.in_process_http import WsgiTransport
from tests.support.portal_server import portal_env, prepare_database

BASE_URL = "http://localhost"
SIGN_IN_PATH = "/_harness/sign-in/"
PATIENTS = 24  # seeded patients, RC-100001 to RC-100024


class _SavepointConnection:
    """What the audit store asks of ``engine.connect()``, as a SAVEPOINT on the test's connection:
    commit releases it, rollback (or leaving without commit) rolls back to it."""

    def __init__(self, connection: sa.Connection):
        self._connection = connection
        self._savepoint = connection.begin_nested()

    def __enter__(self) -> _SavepointConnection:
        return self

    def __exit__(self, *exc) -> None:
        if self._savepoint.is_active:
            self._savepoint.rollback()

    def close(self) -> None:
        self.__exit__()

    def commit(self) -> None:
        self._savepoint.commit()

    def rollback(self) -> None:
        self._savepoint.rollback()

    def execution_options(self, **_options: Any) -> _SavepointConnection:
        return self  # isolation and streaming options do not apply inside the shared transaction

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)  # execute, exec_driver_sql, dialect, connection, ...


class SavepointEngine:
    """Stands in for the audit store's engine during one test: every connect() is a savepoint of ``connection``."""

    def __init__(self, connection: sa.Connection):
        self._connection = connection
        self.dialect = connection.dialect

    def connect(self) -> _SavepointConnection:
        return _SavepointConnection(self._connection)

    def dispose(self) -> None:
        """Nothing to dispose: the connection belongs to the test."""


class _ReleasingSession(Session):
    """The request session of a harness test: closing it with nothing written releases its savepoint.

    In production the audit store appends on its own connection, so a request's audit entries survive
    the request session's rollback at teardown. Here they share the session's connection and land inside
    its savepoint: a plain close (ROLLBACK TO SAVEPOINT) would drop them. A session that wrote nothing
    (no pending objects, no flush since it began) gives the same result either way, so it releases
    instead. A session that flushed and is then rolled back still rolls back, with any audit entry
    appended meanwhile: tests of that case (a write failing after its audit entry) need a real process."""

    def close(self) -> None:
        if self.in_transaction() and not (self.new or self.dirty or self.deleted or self.info.get("flushed")):
            self.commit()
        super().close()


@sa.event.listens_for(_ReleasingSession, "after_flush")
def _flushed(session: Session, _context) -> None:
    session.info["flushed"] = True


@sa.event.listens_for(_ReleasingSession, "after_transaction_end")
def _transaction_ended(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop("flushed", None)


def _sqlite_savepoints(engine: sa.Engine) -> None:
    """pysqlite starts transactions itself and mishandles SAVEPOINT; let SQLAlchemy emit BEGIN (its documented recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")


@dataclass
class HarnessApp:
    """One migrated, seeded application and what a test needs to reach it."""

    app: Flask
    database_url: str
    socketio_server: Any
    keyring: Keyring
    oauth_client: Any
    env: dict[str, str]
    connection: sa.Connection | None = field(default=None, repr=False)

    @property
    def dialect(self) -> str:
        return sa.engine.make_url(self.database_url).get_backend_name()

    @contextmanager
    def rolled_back(self) -> Iterator[sa.Connection]:
        """Run one test inside an outer transaction shared by the app and its audit store, then roll it back."""
        engine: sa.Engine = self.app.extensions["portal.engine"]
        store = self.app.extensions["portal.audit_store"]
        # Rate limits count from zero, as in a freshly started portal (their memory storage outlives a test).
        limiter.reset()
        self.app.extensions["portal.rate_limits"].storage.reset()
        connection = engine.connect()
        outer = connection.begin()
        audit_engine, store.engine = store.engine, SavepointEngine(connection)
        session_class = db_session.session_factory.class_
        self.connection = connection
        self.activate()
        settings = self.app.extensions["portal.settings"]
        try:
            with WsgiTransport(self.app, BASE_URL).installed():
                yield connection
        finally:
            self.app.extensions["portal.settings"] = settings
            self.connection = None
            db_session.remove()
            db_session.session_factory.class_ = session_class
            db_session.session_factory.kw.pop("join_transaction_mode", None)
            bind_engine(engine)
            store.engine = audit_engine
            outer.rollback()
            connection.close()


    def activate(self) -> None:
        """Make this app the process's portal again, bound to its open transaction.

        Every create_app() in this process (a real portal's prepare_database too, even mid-module) rebinds
        what is process-wide: the request session's engine, the keyring, Socket.IO's server, Authlib's client.
        """
        socketio.server = self.socketio_server
        install_keyring(self.keyring)
        oauth._clients["provider"] = self.oauth_client  # Authlib keeps the first app's client for good
        if self.connection is not None:
            db_session.remove()
            db_session.session_factory.class_ = _ReleasingSession
            db_session.configure(bind=self.connection, join_transaction_mode="create_savepoint")

    def configure(self, **changes: Any) -> Settings:
        """Change settings for the rest of the test (restored afterwards); e.g. search_distinct_patients_per_hour=2."""
        settings = dataclasses.replace(self.app.extensions["portal.settings"], **changes)
        self.app.extensions["portal.settings"] = settings
        return settings


@dataclass(frozen=True)
class InProcessPortal:
    """The harness app where tests written for a ``PortalServer`` expect one: ``url`` answers ``requests``
    (through ``WsgiTransport``), ``database`` is the test's connection, ``env`` the settings it was built from."""

    url: str
    env: dict[str, str]
    database: sa.Connection
    app: Flask
    harness: HarnessApp = field(repr=False)

    def configure(self, **changes: Any) -> Settings:
        """Changed settings until the transaction ends (the test's, or the module's)."""
        return self.harness.configure(**changes)


def build(secrets: Path, database_url: str) -> HarnessApp:
    """Migrate and seed ``database_url`` and build the portal on it, as run.py would but in this process.

    Every app of a session shares the keys under ``secrets``: the keyring is installed process-wide."""
    env = portal_env(secrets, database_url, 80, PORTAL_EXTERNAL_URL=BASE_URL, PORTAL_OIDC_ISSUER=f"{BASE_URL}/devidp")
    prepare_database(env, patients=PATIENTS)
    app = create_app(Settings.from_env(env))
    if database_url.startswith("sqlite"):
        _sqlite_savepoints(app.extensions["portal.engine"])
    app.add_url_rule(SIGN_IN_PATH + "<login>", "harness_sign_in", _sign_in_view)
    oauth._clients.pop("provider", None)
    return HarnessApp(app, database_url, socketio.server, active_keyring(), oauth.create_client("provider"), env)


def _sign_in_view(login: str):
    """What /auth/callback does once the provider's ID token is verified, for a demo user's claims."""
    demo = next(user for user in DEMO_USERS if user.login == login)
    settings = services.settings()
    claims = {**user_claims(demo), "auth_time": int(time.time()), "iss": settings.oidc_issuer}
    user = upsert_user(settings.oidc_issuer, claims, settings)
    start_session(user, None, claims)
    record(Action.SIGNIN_SUCCESS, "allowed", reason="roles: " + (user.roles or "none"),
           details={"chart_link": chart_link(user)} if user.has_role("patient") else None)
    return redirect(url_for("main.index"))


def sign_in_client(client: FlaskClient, login: str) -> FlaskClient:
    """Sign ``client`` in as the demo user ``login`` (see ``_sign_in_view``)."""
    response = client.get(SIGN_IN_PATH + login)
    assert response.status_code == 302, f"harness sign-in as {login} failed: {response.status_code}"
    return client


def socket_client(app: Flask, client: FlaskClient | requests.Session | None, namespace: str | None = None,
                  **kwargs: Any) -> SocketIOTestClient:
    """A Socket.IO test client that connects with the cookies (the signed-in session) of ``client``: a Flask
    test client, or a ``requests`` session signed in through ``WsgiTransport``; None for no cookies."""
    if not isinstance(client, FlaskClient):
        jar = client.cookies if client is not None else {}
        client = app.test_client()
        for name, value in jar.items():
            client.set_cookie(name, value)
    return socketio.test_client(app, namespace=namespace, flask_test_client=client, **kwargs)
