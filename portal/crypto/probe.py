"""Does the installed keyring open what the database holds? A cheap check for readiness probes.

A worker started with the wrong keyring (a restore paired with another deployment's keys, a keyring
file from the wrong environment) loads it without complaint: every key is well formed. Only stored
values tell. This opens one stored row of each encrypted table and recomputes that row's blind-index
terms, so such a worker reports itself not ready before anyone asks it for a chart.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine

from .blind_index import compute_term
from .envelope import open_envelope
from .errors import KeyringError
from .keyring import Keyring, active_keyring
from .registry import ModelSpec
from .rotation import encrypted_specs, raw_table


def check_stored_values(engine: Engine, models: Iterable[type] | None = None, keyring: Keyring | None = None) -> int:
    """Open one stored row of each encrypted table of ``models`` (default: every registered model) and check
    its search terms; returns how many values were opened.

    Raises DecryptionError (naming table, column and row) when an envelope does not open, and KeyringError
    when a blind-index term was not made by the keyring's index key of the same id. An empty database passes.
    """
    keyring = keyring or active_keyring()
    checked = 0
    with engine.connect() as conn:
        for spec in encrypted_specs(models):
            raw = raw_table(spec)
            row = conn.execute(select(raw).where(or_(*(raw.c[f.column].is_not(None) for f in spec.fields))).limit(1)) \
                .mappings().first()
            if row is not None:
                checked += _check_row(keyring, spec, row)
    return checked


def _check_row(keyring: Keyring, spec: ModelSpec, row: Any) -> int:
    row_id = row[spec.pk_column]
    plaintexts = {}
    for field in spec.fields:
        if row[field.column] is not None:
            data = open_envelope(keyring, row[field.column], spec.table_name, field.column, row_id)
            plaintexts[field.column] = field.type.deserialise(data)
    for index in spec.indexes:
        stored, plaintext = row[index.column], plaintexts.get(index.source.column)
        if stored is None or plaintext is None:
            continue
        key_id = stored.partition(":")[0]
        if key_id not in keyring.index_key_ids or \
                compute_term(keyring, key_id, index.domain, index.normaliser(plaintext)) != stored:
            raise KeyringError(f"the index key {key_id!r} did not make the search term in "
                               f"{spec.table_name}.{index.column} for row {row_id}")
    return len(plaintexts)
