"""Online, resumable key rotation for Encrypted columns and blind indexes.

``rotate`` walks each table in primary-key order, a batch per short transaction,
and rewrites only values that are not under the primary key (envelopes) or the
primary index key (blind-index terms). Every rewrite is a compare-and-swap::

    UPDATE t SET col = :new WHERE id = :id AND col = :old

so a concurrent application write is never overwritten: a lost race is skipped,
because the application wrote its value under the primary key already. Each
batch commits on its own, so an interrupted run leaves every value decryptable
(old keys stay in the keyring) and a rerun only touches what is still stale.
Values written under an old key by a process that still runs with an older
keyring, behind the cursor, are picked up by the next run; ``rotation_status``
shows whether one is needed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, and_, case, column, func, not_, or_, select, table, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, TableClause

from .envelope import envelope_prefix, open_envelope, seal
from .keyring import Keyring, active_keyring
from .orm import term_for
from .registry import BlindIndex, ModelSpec, encrypted_models, model_spec

UNKNOWN_KEY = "<unknown>"  # status bucket for values under ids absent from the keyring
Progress = Callable[[int, int], Any]  # (rows processed so far, rows pending at start)


@dataclass
class RotationSummary:
    reencrypted: int = 0  # envelopes moved to the primary key
    reindexed: int = 0  # blind-index terms moved to the primary index key
    skipped: int = 0  # compare-and-swap lost to a concurrent write (value already current)
    rows: int = 0  # rows examined
    batches: int = 0

    def audit_details(self) -> dict[str, int]:
        return {"reencrypted": self.reencrypted, "reindexed": self.reindexed, "rows": self.rows}


def rotation_status(
    bind: Session | Engine | Connection,
    models: Iterable[type] | None = None,
    keyring: Keyring | None = None,
) -> dict[str, dict[str, int]]:
    """Counts of stored values per key id, computed in SQL from envelope prefixes.

    Returns ``{"keys": {key_id: n}, "index_keys": {index_key_id: n}}`` with every
    key id of the keyring present (zero included) and ``"<unknown>"`` for values
    whose key id is not in the keyring. Nothing is decrypted.
    """
    keyring = keyring or active_keyring()
    status: dict[str, dict[str, int]] = {
        "keys": dict.fromkeys(keyring.key_ids, 0),
        "index_keys": dict.fromkeys(keyring.index_key_ids, 0),
    }
    for spec in encrypted_specs(models):
        raw = raw_table(spec)
        enc_prefixes = {k: envelope_prefix(k) for k in keyring.key_ids}
        idx_prefixes = {k: f"{k}:" for k in keyring.index_key_ids}
        for field in spec.fields:
            _add(status["keys"], _count_by_prefix(bind, raw, field.column, enc_prefixes))
        for index in spec.indexes:
            _add(status["index_keys"], _count_by_prefix(bind, raw, index.column, idx_prefixes))
    return status


def rotate(
    session_factory: Callable[[], Session],
    models: Iterable[type] | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    keyring: Keyring | None = None,
) -> RotationSummary:
    """Re-encrypt and re-index every stale value of ``models`` (default: all registered)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    keyring = keyring or active_keyring()
    specs = encrypted_specs(models)
    total = sum(_pending_rows(session_factory, spec, keyring) for spec in specs)
    summary = RotationSummary()
    for spec in specs:
        _rotate_model(session_factory, spec, keyring, batch_size, summary, lambda: _report(progress, summary, total))
    return summary


def _rotate_model(
    session_factory: Callable[[], Session],
    spec: ModelSpec,
    keyring: Keyring,
    batch_size: int,
    summary: RotationSummary,
    after_batch: Callable[[], None],
) -> None:
    raw = raw_table(spec)
    pk = raw.c[spec.pk_column]
    last_id = None
    while True:
        query = select(raw).where(_stale(spec, raw, keyring)).order_by(pk).limit(batch_size)
        if last_id is not None:
            query = query.where(pk > last_id)
        with session_factory() as session, session.begin():
            rows = session.execute(query).mappings().all()
            for row in rows:
                _rotate_row(session, spec, raw, row, keyring, summary)
        if not rows:
            return
        last_id = rows[-1][spec.pk_column]
        summary.rows += len(rows)
        summary.batches += 1
        after_batch()


_LOST = object()  # the source envelope changed under us; its blind index is not ours to rebuild


def _rotate_row(
    session: Session, spec: ModelSpec, raw: TableClause, row: Any, keyring: Keyring, summary: RotationSummary
) -> None:
    row_id = row[spec.pk_column]
    current: dict[str, Any] = {}
    for field in spec.fields:
        old = row[field.column]
        current[field.column] = old
        if old is None or old.startswith(envelope_prefix(keyring.primary)):
            continue
        data = open_envelope(keyring, old, spec.table_name, field.column, row_id)
        new = seal(keyring, data, spec.table_name, field.column, row_id)
        won = _swap(session, raw, spec, row_id, {field.column: new}, {field.column: old})
        current[field.column] = new if won else _LOST
        summary.reencrypted += won
        summary.skipped += not won
    for index in spec.indexes:
        _reindex(session, spec, raw, row, index, current[index.source.column], keyring, summary)


def _reindex(
    session: Session,
    spec: ModelSpec,
    raw: TableClause,
    row: Any,
    index: BlindIndex,
    source_envelope: Any,
    keyring: Keyring,
    summary: RotationSummary,
) -> None:
    old = row[index.column]
    if old is None or old.startswith(f"{keyring.index_primary}:"):
        return
    if source_envelope is _LOST:
        summary.skipped += 1
        return
    row_id = row[spec.pk_column]
    plaintext = None
    if source_envelope is not None:
        data = open_envelope(keyring, source_envelope, spec.table_name, index.source.column, row_id)
        plaintext = index.source.type.deserialise(data)
    expected = {index.column: old, index.source.column: source_envelope}
    won = _swap(session, raw, spec, row_id, {index.column: term_for(keyring, index, plaintext)}, expected)
    summary.reindexed += won
    summary.skipped += not won


def _swap(
    session: Session, raw: TableClause, spec: ModelSpec, row_id: Any, values: dict[str, Any], expected: dict[str, Any]
) -> bool:
    """Compare-and-swap UPDATE; True when this call changed the row."""
    conditions = [raw.c[spec.pk_column] == row_id]
    for name, value in expected.items():
        conditions.append(raw.c[name].is_(None) if value is None else raw.c[name] == value)
    result = session.execute(update(raw).where(*conditions).values(**values))
    return result.rowcount == 1


def _stale(spec: ModelSpec, raw: TableClause, keyring: Keyring) -> ColumnElement[bool]:
    enc = envelope_prefix(keyring.primary)
    idx = f"{keyring.index_primary}:"
    conditions = [_not_under(raw.c[f.column], enc) for f in spec.fields]
    conditions += [_not_under(raw.c[i.column], idx) for i in spec.indexes]
    return or_(*conditions)


def _not_under(col: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
    return and_(col.is_not(None), not_(col.startswith(prefix, autoescape=True)))


def _pending_rows(session_factory: Callable[[], Session], spec: ModelSpec, keyring: Keyring) -> int:
    raw = raw_table(spec)
    with session_factory() as session:
        return session.execute(select(func.count()).select_from(raw).where(_stale(spec, raw, keyring))).scalar_one()


def _count_by_prefix(
    bind: Session | Engine | Connection, raw: TableClause, name: str, prefixes: dict[str, str]
) -> dict[str, int]:
    col = raw.c[name]
    counts = [func.count(case((col.startswith(p, autoescape=True), 1))) for p in prefixes.values()]
    query = select(*counts, func.count(col)).select_from(raw)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            row = conn.execute(query).one()
    else:
        row = bind.execute(query).one()
    result = dict(zip(prefixes, row[:-1], strict=True))
    unknown = row[-1] - sum(row[:-1])
    if unknown:
        result[UNKNOWN_KEY] = unknown
    return result


def raw_table(spec: ModelSpec) -> TableClause:
    """Untyped view of the model's table: reads return envelopes, writes bypass Encrypted."""
    names = [spec.pk_column] + [f.column for f in spec.fields] + [i.column for i in spec.indexes]
    return table(spec.table.name, *(column(n, Text) for n in names), schema=spec.table.schema)


def encrypted_specs(models: Iterable[type] | None) -> Sequence[ModelSpec]:
    classes = encrypted_models() if models is None else list(models)
    return [spec for spec in (model_spec(m) for m in classes) if spec.fields]


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key_id, count in counts.items():
        total[key_id] = total.get(key_id, 0) + count


def _report(progress: Progress | None, summary: RotationSummary, total: int) -> None:
    if progress is not None:
        progress(summary.rows, total)

