"""The audit log's Merkle tree in SQL: the node table (audit.schema.audit_tree_node).

Why a node table rather than C2SP tlog-tiles: the log already lives in a transactional database,
and one row per complete subtree, keyed by (level, idx), lets an append write its new hashes in
the same transaction as its entries, while a tree hash or proof is one indexed query for O(log n)
rows. Tiles (the same hashes grouped by 256) would mean rewriting partial tiles in place, which the
append-only triggers forbid. A tile server can still be laid over this table later: it holds
exactly the hashes tlog-tiles serves.

Leaf i is the entry with seq i + 1 (Entry.leaf_data()); seqs are consecutive from 1. Full
verification reads the entries here as rows, page by page with their stored leaves (`leaf_pages`),
and each page's stored interior hashes in one query (`interior_hashes`): no entry objects.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from hashlib import sha256
from typing import Any

import sqlalchemy as sa

from audit.entries import Entry, leaf_data
from audit.errors import MalformedEntryError, TreeError
from audit.events import AuditEvent, format_time
from audit.merkle import LEAF_PREFIX, Address, append_leaves, leaf_hash, subtree_addresses
from audit.queries import EVENT_COLUMNS, entry_from_row
from audit.schema import audit_entry, audit_tree_checkpoint, audit_tree_node

BACKFILL_PAGE = 5000
IN_LIST_LIMIT = 64
_nodes = audit_tree_node.c


@functools.lru_cache(maxsize=IN_LIST_LIMIT)
def _lookup(count: int) -> sa.Select:
    """SELECT of `count` nodes by primary key, built once per count (appends run it every time)."""
    return sa.select(_nodes.level, _nodes.idx, _nodes.hash).where(sa.or_(
        *((_nodes.level == sa.bindparam(f"l{n}")) & (_nodes.idx == sa.bindparam(f"i{n}")) for n in range(count))))


def _select(conn: sa.Connection, addresses: Sequence[Address]) -> dict[Address, bytes]:
    """A proof's few addresses in one query; the many of a verification page as one range per level
    (a page's new hashes are contiguous on every level, and a long list is slow to compile).

    The few are an OR of primary-key equalities, which SQLite and PostgreSQL both answer from the
    primary key's index; a row-value IN list, `(level, idx) IN (...)`, makes SQLite scan the table.
    """
    if not addresses:
        return {}
    wanted = sorted(set(addresses))
    if len(wanted) <= IN_LIST_LIMIT:
        parameters = {}
        for n, (level, index) in enumerate(wanted):
            parameters[f"l{n}"], parameters[f"i{n}"] = level, index
        return {(row.level, row.idx): bytes(row.hash) for row in conn.execute(_lookup(len(wanted)), parameters)}
    levels: dict[int, list[int]] = {}
    for level, index in wanted:
        levels.setdefault(level, []).append(index)
    queries = [sa.select(_nodes.level, _nodes.idx, _nodes.hash).where(
        _nodes.level == level, _nodes.idx.between(indexes[0], indexes[-1])) for level, indexes in levels.items()]
    return {(row.level, row.idx): bytes(row.hash) for query in queries for row in conn.execute(query)}


def _ordered(found: dict[Address, bytes], addresses: Sequence[Address]) -> list[bytes]:
    missing = [address for address in addresses if address not in found]
    if missing:
        level, index = missing[0]
        raise TreeError(f"the audit tree has no stored hash at level {level}, index {index} "
                        f"({len(missing)} of {len(addresses)} missing)")
    return [found[address] for address in addresses]


def read_hashes(conn: sa.Connection, addresses: Sequence[Address]) -> list[bytes]:
    """The stored hashes of `addresses`, in order, in one query; TreeError names a missing one."""
    return _ordered(_select(conn, addresses), addresses)


def stored_size(conn: sa.Connection) -> int:
    """Number of leaves in the node table (one past the highest leaf index)."""
    highest = conn.execute(sa.select(sa.func.max(_nodes.idx)).where(_nodes.level == 0)).scalar_one()
    return 0 if highest is None else highest + 1


def extend(conn: sa.Connection, size: int, entries: Iterable[Entry]) -> int:
    """Insert the hashes `entries` complete in a tree of `size` leaves; returns the new size.

    Reads only the frontier (one hash per set bit of `size`). Runs inside the caller's
    transaction, so the hashes commit or roll back with the entries.
    """
    rows: list[dict[str, Any]] = []
    wanted = subtree_addresses(0, size)
    found = _select(conn, [*wanted, (0, size)])  # one query: the frontier, and a leaf that must not exist yet
    if (0, size) in found:
        raise TreeError(f"the audit tree already has a leaf at index {size} but the log has {size} entries "
                        "(entries were removed or the tree was edited): verify the log")
    frontier = _ordered(found, wanted)

    def store(address: Address, digest: bytes) -> None:
        rows.append({"level": address[0], "idx": address[1], "hash": digest})

    leaves = []
    for expected_seq, entry in enumerate(entries, start=size + 1):
        if entry.seq != expected_seq:
            raise TreeError(f"audit entry seq {entry.seq} cannot be leaf {expected_seq - 1}: seqs must be "
                            "consecutive from 1 (verify the log: an entry is missing or out of order)")
        leaves.append(entry.leaf_hash())
    new_size, _ = append_leaves(frontier, size, leaves, store)
    if rows:
        conn.execute(audit_tree_node.insert(), rows)
    return new_size


def build_tree(conn: sa.Connection, page: int = BACKFILL_PAGE) -> int:
    """Add to the node table every entry it lacks, in seq order; returns the tree size.

    Used by the migration that introduces the tree (and for logs created before it); a tree that
    is already complete costs one query. Resumable: it starts from what is stored.
    """
    size = stored_size(conn)
    while True:
        rows = conn.execute(
            sa.select(audit_entry).where(audit_entry.c.seq > size).order_by(audit_entry.c.seq).limit(page)).all()
        if not rows:
            return size
        size = extend(conn, size, [entry_from_row(row) for row in rows])


# --------------------------------------------------------------------------- reading for full verification

_entries = audit_entry.c
_EVENT_NAMES = tuple(sorted((*EVENT_COLUMNS, "details")))  # canonical JSON's key order


@functools.lru_cache(maxsize=4)
def _lean_query(dialect: str) -> sa.Select:
    """seq and the event's columns in canonical key order, `time` as text: SQLite's stored text of the naive UTC
    time, and PostgreSQL's timestamptz written in that same shape (a driver's datetime objects cost more than
    the hashing)."""
    if dialect == "postgresql":
        time = sa.func.to_char(sa.func.timezone("UTC", _entries.time), sa.literal("YYYY-MM-DD HH24:MI:SS.US"))
    else:
        time = sa.type_coerce(_entries.time, sa.String())
    columns = (time.label("time") if name == "time" else _entries[name] for name in _EVENT_NAMES)
    return sa.select(_entries.seq, *columns).order_by(_entries.seq)
# The leaf data of a row, {"event": {...}, "seq": n}, with every key in canonical order; %s are JSON texts
# (the details column is stored as canonical JSON), the time is "%s" inside quotes (ISO digits only).
_LEAF_TEMPLATE = ('{"event":{' + ",".join(f'"{name}":' + ('"%s"' if name == "time" else "%s") for name in _EVENT_NAMES)
                  + '},"seq":%d}')
_json_text = json.encoder.encode_basestring  # what canonical_json writes for a str (ensure_ascii=False)


def snapshot(conn: sa.Connection) -> tuple[int, int, int]:
    """(newest seq, tree size, newest checkpoint id) in one statement, so one snapshot of the log."""
    row = conn.execute(sa.select(
        sa.select(sa.func.max(_entries.seq)).scalar_subquery(),
        sa.select(sa.func.max(_nodes.idx)).where(_nodes.level == 0).scalar_subquery(),
        sa.select(sa.func.max(audit_tree_checkpoint.c.id)).scalar_subquery(),
    )).one()
    return row[0] or 0, 0 if row[1] is None else row[1] + 1, row[2] or 0


def _event_time(value: Any) -> str:
    """The event's `time` as AuditEvent.to_dict() spells it, from what the driver returned (SQLite's text of
    a naive UTC time, or PostgreSQL's aware datetime), without building the datetime when the text is standard."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return format_time(value)


def _row_event(row: Sequence[Any]) -> dict[str, Any]:
    """The event of a row of `_lean_query` as AuditEvent.to_dict() gives it."""
    try:
        event = dict(zip(_EVENT_NAMES, row[1:], strict=True))
        event["time"] = _event_time(event["time"])
        event["details"] = json.loads(event["details"])
    except (ValueError, TypeError) as exc:
        raise MalformedEntryError(row[0], f"unreadable audit row: {exc}") from None
    return event


def row_leaf_data(row: Sequence[Any]) -> bytes:
    """The leaf data of a row of `_lean_query`: canonical JSON of {seq, event}, as Entry.leaf_data()."""
    return leaf_data(row[0], _row_event(row))


def _quick_leaf_hash(row: Sequence[Any]) -> bytes | None:
    """The leaf hash of a row written as the store writes rows, without parsing its details or building a
    datetime (None when it is not): equal to the exact one whenever it equals the stored leaf, since equal
    bytes mean equal values; for anything else `row_leaf_data` decides. Spelled out column by column
    because it runs once per entry of the log."""
    (seq, action, actor_id, actor_role, details, outcome, patient_id, reason, request_id, resource_id, resource_type,
     session_hash, source_ip, time, user_agent) = row
    q = _json_text
    if type(time) is str and len(time) == 26 and time[10] == " ":  # _event_time's common case, inlined
        time = f"{time[:10]}T{time[11:]}Z"
    try:
        text = _LEAF_TEMPLATE % (
            q(action), "null" if actor_id is None else q(actor_id), "null" if actor_role is None else q(actor_role),
            details, q(outcome), "null" if patient_id is None else q(patient_id),
            "null" if reason is None else q(reason), "null" if request_id is None else q(request_id),
            "null" if resource_id is None else q(resource_id), "null" if resource_type is None else q(resource_type),
            "null" if session_hash is None else q(session_hash), "null" if source_ip is None else q(source_ip),
            time if type(time) is str and time[-1] == "Z" else _event_time(time),
            "null" if user_agent is None else q(user_agent), seq)
        return sha256(LEAF_PREFIX + text.encode("utf-8")).digest()  # leaf_hash(), inlined
    except (ValueError, TypeError, AttributeError):
        return None


def row_entry(row: Sequence[Any]) -> Entry:
    """The entry of a row of `_lean_query` (MalformedEntryError when it cannot be one)."""
    try:
        return Entry(row[0], AuditEvent.from_dict(_row_event(row)))
    except (ValueError, TypeError) as exc:
        raise MalformedEntryError(row[0], f"unreadable audit row: {exc}") from None


def leaf_pages(engine: sa.Engine, through: int, page: int = BACKFILL_PAGE
               ) -> Iterator[list[tuple[int, int, bytes, bytes | None, Sequence[Any]]]]:
    """(seq, seq, leaf hash of the row, stored leaf hash or None, row) of every entry up to seq `through`, in pages
    read by seq range, each with its stored leaves in the same short transaction; rows, not entries. A row
    that cannot be read raises MalformedEntryError after the page of the rows before it."""
    query = _lean_query(engine.dialect.name).limit(page)
    leaves = sa.select(_nodes.idx, _nodes.hash).where(_nodes.level == 0)
    last = 0
    while last < through:
        with engine.connect() as conn:
            rows = _driver_rows(conn, query.where(_entries.seq > last, _entries.seq <= through))
            if not rows:
                return
            stored = {index: _bytes(digest) for index, digest in
                      _driver_rows(conn, leaves.where(_nodes.idx.between(rows[0][0] - 1, rows[-1][0] - 1)))}
        items = []
        try:
            for row in rows:
                claimed = stored.get(row[0] - 1)
                leaf = _quick_leaf_hash(row)
                items.append((row[0], row[0], leaf if leaf == claimed else leaf_hash(row_leaf_data(row)), claimed, row))
        except MalformedEntryError:
            yield items
            raise
        yield items
        last = rows[-1][0]


def interior_hashes(engine: sa.Engine, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """(level, index, hash) of the stored nodes above the leaves that leaves start..end-1 complete (levels 1 and
    up), ordered by level and index, in one query."""
    ranges = [(level, start >> level, (end >> level) - 1) for level in range(1, end.bit_length() + 1)]
    clauses = [(_nodes.level == level) & _nodes.idx.between(low, high) for level, low, high in ranges if low <= high]
    if not clauses:
        return []
    query = sa.select(_nodes.level, _nodes.idx, _nodes.hash).where(sa.or_(*clauses)).order_by(_nodes.level, _nodes.idx)
    with engine.connect() as conn:
        rows = _driver_rows(conn, query)
    return rows if engine.dialect.name == "sqlite" else [(level, index, _bytes(digest)) for level, index, digest in rows]


def _driver_rows(conn: sa.Connection, query: sa.Select) -> list[tuple[Any, ...]]:
    """The rows of `query` as the database driver returns them: plain tuples, no result processing (full
    verification reads every row of the log, and building SQLAlchemy rows cost more than hashing them)."""
    compiled = query.compile(dialect=conn.dialect)
    parameters: Any = compiled.params
    if compiled.positional:
        parameters = tuple(parameters[name] for name in compiled.positiontup)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), parameters)
        return cursor.fetchall()
    finally:
        cursor.close()


def _bytes(value: bytes | memoryview) -> bytes:
    return value if type(value) is bytes else bytes(value)  # psycopg2 returns memoryview for bytea

