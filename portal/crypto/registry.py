"""Which mapped models hold Encrypted columns and blind indexes, and the search terms of those indexes.

Built lazily from the mapper and cached per class; ``register_encryption``
records each declarative base so ``encrypted_models()`` can enumerate them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy import inspect as sa_inspect

from .blind_index import INFO_KEY, BlindIndexInfo, Normaliser, compute_term
from .column import Encrypted
from .errors import ConfigurationError
from .keyring import Keyring, active_keyring


@dataclass(frozen=True)
class EncryptedField:
    key: str  # attribute name on the model
    column: str  # database column name, used in associated data
    type: Encrypted


@dataclass(frozen=True)
class BlindIndex:
    key: str
    column: str
    source: EncryptedField
    normaliser: Normaliser
    domain: str


@dataclass(frozen=True)
class ModelSpec:
    model: type
    table: Table
    pk_key: str
    pk_column: str
    fields: tuple[EncryptedField, ...]
    indexes: tuple[BlindIndex, ...]

    @property
    def table_name(self) -> str:
        return self.table.name

    def index_for(self, source: str) -> BlindIndex:
        """The blind index filled from attribute ``source`` (or named ``source``)."""
        for index in self.indexes:
            if source in (index.source.key, index.key):
                return index
        raise ConfigurationError(f"{self.model.__name__} has no blind index on {source!r}")


_specs: dict[type, ModelSpec] = {}
_bases: list[type] = []
_lock = threading.Lock()


def add_base(base: type) -> bool:
    """Record a declarative base; False when it was already registered."""
    with _lock:
        if base in _bases:
            return False
        _bases.append(base)
        return True


def encrypted_models() -> list[type]:
    """Mapped classes with Encrypted columns under every registered base."""
    models = []
    for base in list(_bases):
        for mapper in base.registry.mappers:
            if model_spec(mapper.class_).fields:
                models.append(mapper.class_)
    return models


def model_spec(model: type) -> ModelSpec:
    spec = _specs.get(model)
    if spec is None:
        spec = _build_spec(model)
        with _lock:
            _specs[model] = spec
    return spec


def _build_spec(model: type) -> ModelSpec:
    mapper = sa_inspect(model)
    table = mapper.local_table
    for col in mapper.columns:
        if (isinstance(col.type, Encrypted) or INFO_KEY in col.info) and col.table is not table:
            raise ConfigurationError(
                f"{model.__name__}.{col.name}: Encrypted and blind-index columns must live in "
                "the model's own table"
            )
    fields = tuple(
        EncryptedField(mapper.get_property_by_column(col).key, col.name, col.type)
        for col in mapper.columns
        if isinstance(col.type, Encrypted)
    )
    pk_key, pk_column = _primary_key(mapper, table) if fields else ("", "")
    indexes = tuple(_blind_indexes(mapper, table, fields))
    return ModelSpec(model, table, pk_key, pk_column, fields, indexes)


def _primary_key(mapper, table: Table) -> tuple[str, str]:
    columns = list(table.primary_key.columns)
    if len(columns) != 1:
        raise ConfigurationError(
            f"{mapper.class_.__name__}: models with Encrypted columns need a single-column "
            "string primary key (see portal.crypto.new_id)"
        )
    return mapper.get_property_by_column(columns[0]).key, columns[0].name


def _blind_indexes(mapper, table: Table, fields: tuple[EncryptedField, ...]):
    by_key = {field.key: field for field in fields}
    for col in mapper.columns:
        info = col.info.get(INFO_KEY)
        if not isinstance(info, BlindIndexInfo):
            continue
        source = by_key.get(info.source)
        if source is None:
            raise ConfigurationError(
                f"{mapper.class_.__name__}.{col.name}: blind index source {info.source!r} "
                "is not an Encrypted attribute"
            )
        key = mapper.get_property_by_column(col).key
        yield BlindIndex(key, col.name, source, info.normaliser, f"{table.name}.{col.name}")


def blind_index_terms(model_cls: type, source: str, value: Any, keyring: Keyring | None = None) -> list[str]:
    """Terms for ``value`` under every index key, primary first, for ``Model.x_bidx.in_(terms)``.

    Searching with all keys keeps lookups working while ``rotate`` moves the stored
    terms from an old index key to the new one. ``None`` yields no terms.
    """
    index = model_spec(model_cls).index_for(source)
    if value is None:
        return []
    keyring = keyring or active_keyring()
    normalised = index.normaliser(value)
    ids = [keyring.index_primary] + [k for k in keyring.index_key_ids if k != keyring.index_primary]
    return [compute_term(keyring, key_id, index.domain, normalised) for key_id in ids]
