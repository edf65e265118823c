"""Reading and writing a portal's database behind its back: a real portal's (by URL) or an in-process test's
(its connection, see tests/support/harness.py); ``portal.database`` is whichever the test has."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import sqlalchemy as sa


def connected(database: str | sa.Connection) -> AbstractContextManager[sa.Connection]:
    """A connection for reading: an in-process test's own, or one to a real portal's URL."""
    return _opened(database, write=False)


def writing(database: str | sa.Connection) -> AbstractContextManager[sa.Connection]:
    """A committed write (a tamper test's): in a savepoint of an in-process test's connection, rolled back with
    the test, or in a transaction on a real portal's database URL."""
    return _opened(database, write=True)


@contextmanager
def _opened(database: str | sa.Connection, write: bool) -> Iterator[sa.Connection]:
    if isinstance(database, sa.Connection):
        with database.begin_nested() if write else nullcontext():
            yield database
        return
    engine = sa.create_engine(database)
    try:
        with engine.begin() if write else engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
