"""Shipped migrations keep doing exactly what they did: their source may change, the SQL they send may not."""
from __future__ import annotations

import sqlalchemy as sa

from tests.support.migration_ddl import frozen, frozen_revisions, replayed, revisions


def test_every_frozen_revision_sends_the_statements_it_sent_when_it_shipped(database_url):
    dialect = sa.engine.make_url(database_url).get_backend_name()
    expected = frozen(dialect)

    sent = replayed(database_url, frozen_revisions(dialect))

    assert list(sent) == list(expected)
    for step, statements in expected.items():
        assert sent[step] == statements, f"{step} on {dialect} no longer sends what it shipped with"


def test_the_frozen_revisions_are_the_oldest_ones_in_order(sqlite_url):
    for dialect in ("sqlite", "postgresql"):
        frozen_ids = frozen_revisions(dialect)
        assert frozen_ids[:6] == ["0001", "0002", "0003", "0004", "0005", "0006"]
        assert frozen_ids == revisions(sqlite_url)[: len(frozen_ids)]
