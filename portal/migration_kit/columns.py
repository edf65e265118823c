"""Column kinds and foreign keys: the elements of ``op.create_table`` and ``steps.add_columns``."""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

ID_LENGTH = 36  # a UUID's text form


class ColumnKind:
    """Columns of one SQL type: ``kind(name)`` is NOT NULL, ``kind.optional(name)`` may be NULL; a kind with a
    size (``string``) takes it after the name: ``string('digest', 64)``."""

    def __init__(self, sql_type: Callable[..., TypeEngine]) -> None:
        self._sql_type = sql_type

    def __call__(self, name: str, *size: int) -> sa.Column:
        return sa.Column(name, self._sql_type(*size), nullable=False)

    def optional(self, name: str, *size: int) -> sa.Column:
        return sa.Column(name, self._sql_type(*size), nullable=True)


identifier = ColumnKind(lambda: sa.String(length=ID_LENGTH))  # a row's own id, or another row's
string = ColumnKind(lambda length: sa.String(length=length))
text = ColumnKind(sa.Text)
timestamp = ColumnKind(lambda: sa.DateTime(timezone=True))
integer = ColumnKind(sa.Integer)
big_integer = ColumnKind(sa.BigInteger)
boolean = ColumnKind(sa.Boolean)


def cascade(column: str, target: str) -> sa.ForeignKeyConstraint:
    """``column`` references ``target`` ("table.column"); the row goes when the row it references goes."""
    return sa.ForeignKeyConstraint([column], [target], ondelete="CASCADE")


def set_null(column: str, target: str) -> sa.ForeignKeyConstraint:
    """``column`` references ``target``; it becomes NULL when the row it references goes."""
    return sa.ForeignKeyConstraint([column], [target], ondelete="SET NULL")
