"""Fixtures of the audit store's integration tests (each runs on SQLite and PostgreSQL through ``database_url``)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on the test's empty database; a module that needs the audit tables made first defines its own."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()
