"""Engine and session for the portal's database: SQLite by default, PostgreSQL in production."""
from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

from portal.crypto import register_encryption


class Base(DeclarativeBase):
    """Declarative base of every portal model."""


register_encryption(Base)


# One session per request (thread or greenlet); removed when the app context ends.
db_session: scoped_session[Session] = scoped_session(sessionmaker(expire_on_commit=False))


def create_engine(url: str) -> sa.Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite, a pre-pinged pool elsewhere."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)
        sa.event.listen(engine, "connect", _configure_sqlite)
        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_recycle=1800, hide_parameters=True
    )


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def end_session(_exc: BaseException | None = None) -> None:
    """Return the request's connection to the pool; a connection the database already dropped is discarded."""
    try:
        db_session.remove()
    except sa.exc.DBAPIError:
        db_session.registry.clear()


def bind_engine(engine: sa.Engine) -> None:
    db_session.remove()
    db_session.configure(bind=engine)


@contextmanager
def transaction() -> Iterator[Session]:
    """Commit the request's session when the block succeeds, roll everything back when it fails."""
    session = db_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


_process_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


@contextmanager
def serialised(name: str) -> Iterator[None]:
    """Run the block as the only holder of ``name`` across every worker.

    On PostgreSQL an advisory lock in the request's transaction: it is held until the request's session
    ends, so whatever the block audited is committed before the next holder looks. SQLite serves one
    process (development), where the process lock is enough.
    """
    with _process_locks[name]:
        session = db_session()
        if session.get_bind().dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        yield

