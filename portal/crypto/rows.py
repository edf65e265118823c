"""Opening rows read with SQLAlchemy Core: the same envelopes, keys and associated data as the ORM path.

Pages and APIs that only show a chart need neither ORM instances nor their change tracking; they read
rows and open each encrypted cell once with ``open_row``. Writing always goes through the ORM events
(``portal.crypto.orm``), the one place values are sealed.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import inspect as sa_inspect

from .envelope import open_envelope
from .keyring import active_keyring
from .registry import model_spec


def open_row(model: type, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` (column name -> stored value, the primary key among them) as attribute name -> value,
    every Encrypted column opened; a failure raises DecryptionError naming the table, column and row."""
    spec = model_spec(model)
    keyring = active_keyring()
    row_id = row[spec.pk_column]
    attributes = _attribute_names(model)
    values = {attributes.get(column, column): value for column, value in row.items()}
    for field in spec.fields:
        stored = row.get(field.column)
        if stored is not None:
            values[field.key] = field.type.deserialise(open_envelope(keyring, stored, spec.table_name, field.column, row_id))
    return values


_names: dict[type, dict[str, str]] = {}


def _attribute_names(model: type) -> dict[str, str]:
    names = _names.get(model)
    if names is None:
        mapper = sa_inspect(model)
        names = _names[model] = {column.name: mapper.get_property_by_column(column).key for column in mapper.columns}
    return names
