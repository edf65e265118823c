"""The ``Encrypted`` column type.

Bind processing cannot know the row id, so the type itself does no cryptography:
the ORM events in :mod:`portal.crypto.orm` seal values into :class:`Sealed`
envelopes before a flush, and the type only lets ``Sealed`` values (or None)
reach the database. Anything else is refused so plaintext can never be stored
by a code path that bypassed the events (Core inserts, bulk mappings, filters).

``None`` is stored as SQL NULL without encryption: the presence or absence of a
value is therefore visible in the database, its content is not.
"""
from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from .errors import EncryptionError

SUPPORTED_TYPES: tuple[type, ...] = (str, datetime.date)


class Sealed(str):
    """An envelope string produced by the sealing path or read from the database."""

    __slots__ = ()


class Encrypted(TypeDecorator):
    """Text column holding a ``v1:`` envelope of a ``str`` or ``datetime.date`` value."""

    impl = Text
    cache_ok = True

    def __init__(self, python_type: type = str) -> None:
        if python_type not in SUPPORTED_TYPES:
            raise TypeError("Encrypted() supports str and datetime.date only")
        super().__init__()
        self._python_type = python_type

    @property
    def python_type(self) -> type:
        return self._python_type

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, Sealed):
            return str(value)
        raise EncryptionError(
            "refusing to write an unsealed value to an Encrypted column: write it through "
            "the ORM on a model registered with portal.crypto.register_encryption()"
        )

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        raise EncryptionError("Encrypted columns cannot be rendered as SQL literals")

    def process_result_value(self, value: Any, dialect: Dialect) -> Sealed | None:
        return None if value is None else Sealed(value)

    def serialise(self, value: Any) -> bytes:
        """Plaintext bytes for ``value``; raises EncryptionError on a wrong type."""
        if self._python_type is str and isinstance(value, str):
            return value.encode("utf-8")
        if self._python_type is datetime.date and _is_plain_date(value):
            return value.isoformat().encode("ascii")
        raise EncryptionError(f"Encrypted({self._python_type.__name__}) got a {type(value).__name__}")

    def deserialise(self, data: bytes) -> Any:
        text = data.decode("utf-8")
        return datetime.date.fromisoformat(text) if self._python_type is datetime.date else text


def _is_plain_date(value: Any) -> bool:
    """datetime is a date subclass; storing one would silently drop its time."""
    return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
