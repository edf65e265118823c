"""Schema steps on one table, each in one batch (SQLite copies a table at most once per step)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_indexes(table: str, *columns: str) -> None:
    """One non-unique index per column, named ``ix_<table>_<column>``."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def drop_indexes(table: str, *columns: str) -> None:
    """Drop the indexes ``create_indexes`` made, in the order given."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))


def add_columns(table: str, *columns: sa.Column) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.add_column(column)


def drop_columns(table: str, *names: str, indexes: tuple[str, ...] = ()) -> None:
    """Drop the indexes on ``indexes`` (columns), then the columns, in the order given. On SQLite this copies
    the table once, without them."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in indexes:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
        for name in names:
            batch_op.drop_column(name)
