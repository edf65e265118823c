"""Reading the SQL audit log the way its users need: pages, counts, histograms and a chart's accesses.

These are the only reads of the audit tables outside appending and verifying; the portal's compliance
console, "Who viewed my chart" and the accounting of disclosures use them through ``SqlAuditStore``.
Every method filters in the database and returns ``Entry`` objects (or plain counts), never rows.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from audit.entries import Entry
from audit.errors import MalformedEntryError
from audit.events import AuditEvent
from audit.filters import AuditFilter
from audit.schema import audit_entry

STREAM_PAGE = 1000
EVENT_COLUMNS = (
    "time", "actor_id", "actor_role", "action", "outcome", "patient_id", "resource_type",
    "resource_id", "reason", "source_ip", "user_agent", "request_id", "session_hash",
)
_columns = audit_entry.c


def entry_from_row(row: sa.Row) -> Entry:
    """Rebuild an entry from its row; an unparseable row becomes MalformedEntryError, not a crash."""
    try:
        values = {name: getattr(row, name) for name in EVENT_COLUMNS}
        event = AuditEvent(details=json.loads(row.details), **values)
    except (ValueError, TypeError) as exc:
        raise MalformedEntryError(row.seq, f"unreadable audit row: {exc}") from None
    return Entry(row.seq, event)


def filter_clauses(filter: AuditFilter | None) -> list[sa.ColumnElement[bool]]:
    """SQL WHERE clauses equivalent to AuditFilter.matches, so filtering happens in the database."""
    if filter is None:
        return []
    clauses = []
    if filter.since is not None:
        clauses.append(_columns.time >= filter.since)
    if filter.until is not None:
        clauses.append(_columns.time < filter.until)
    for name in ("actor_id", "patient_id", "outcome"):
        value = getattr(filter, name)
        if value is not None:
            clauses.append(_columns[name] == value)
    if filter.action is not None:
        clauses.append(_columns.action.startswith(filter.action, autoescape=True))
    if filter.through is not None:
        clauses.append(_columns.seq <= filter.through)
    return clauses


def _any_prefix(prefixes: Iterable[str]) -> sa.ColumnElement[bool]:
    return sa.or_(*(_columns.action.startswith(prefix, autoescape=True) for prefix in prefixes))


@dataclass(frozen=True)
class Page:
    """One page of matching entries, newest first; ``next_before`` is the cursor of the next page."""

    entries: list[Entry]
    total: int
    next_before: int | None


class AuditQueries:
    """Read-only queries over ``self.engine``; mixed into ``SqlAuditStore``."""

    engine: sa.Engine

    def page(self, filter: AuditFilter, before: int | None = None, size: int = 50) -> Page:
        """Matching entries with seq below ``before``, newest first, and how many match in all."""
        clauses = filter_clauses(filter)
        query = sa.select(audit_entry).where(*clauses)
        if before is not None:
            query = query.where(_columns.seq < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(_columns.seq.desc()).limit(size + 1)).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(audit_entry).where(*clauses)).scalar_one()
        entries = [entry_from_row(row) for row in rows[:size]]
        return Page(entries, total, entries[-1].seq if len(rows) > size else None)

    def entry(self, seq: int) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit_entry).where(_columns.seq == seq)).first()
        return entry_from_row(row) if row else None

    def latest(self, filter: AuditFilter, limit: int, *, actions: Iterable[str] = (),
               not_actions: Iterable[str] = (), outside_hours: tuple[int, int] | None = None) -> list[Entry]:
        """The newest matching entries. ``actions``: any of these prefixes; ``not_actions``: none of them;
        ``outside_hours`` (start, end): only entries whose UTC hour of day is before start or from end on."""
        clauses = filter_clauses(filter)
        actions, not_actions = tuple(actions), tuple(not_actions)
        if actions:
            clauses.append(_any_prefix(actions))
        if not_actions:
            clauses.append(sa.not_(_any_prefix(not_actions)))
        with self.engine.connect() as conn:
            if outside_hours is not None:
                hour = _hour_of_day(conn.dialect.name)
                clauses.append(sa.or_(hour < outside_hours[0], hour >= outside_hours[1]))
            rows = conn.execute(sa.select(audit_entry).where(*clauses).order_by(_columns.seq.desc()).limit(limit)).all()
        return [entry_from_row(row) for row in rows]

    def time_histogram(self, filter: AuditFilter, unit: str) -> dict[str, int]:
        """Matching entries per UTC hour ("YYYY-MM-DD HH") or day ("YYYY-MM-DD")."""
        with self.engine.connect() as conn:
            bucket = _bucket(conn.dialect.name, unit).label("bucket")
            rows = conn.execute(sa.select(bucket, sa.func.count()).where(*filter_clauses(filter)).group_by(bucket))
            return {key: int(count) for key, count in rows}

    def action_counts(self, filter: AuditFilter, limit: int) -> list[tuple[str, int]]:
        """The most frequent actions among matching entries, most frequent first."""
        query = (sa.select(_columns.action, sa.func.count().label("n")).where(*filter_clauses(filter))
                 .group_by(_columns.action).order_by(sa.desc("n"), _columns.action).limit(limit))
        with self.engine.connect() as conn:
            return [(row.action, int(row.n)) for row in conn.execute(query)]

    def reads_by_actor(self, since: datetime, until: datetime, actions: Iterable[str]) -> Iterator[tuple[str, datetime, str]]:
        """(actor, time, patient) of every allowed entry with one of the action prefixes, by actor then time,
        streamed: a week of a clinic's log never sits in memory at once."""
        query = (
            sa.select(_columns.actor_id, _columns.time, _columns.patient_id)
            .where(_columns.time >= since, _columns.time < until, _any_prefix(actions), _columns.outcome == "allowed",
                   _columns.actor_id.is_not(None), _columns.patient_id.is_not(None))
            .order_by(_columns.actor_id, _columns.time)
        )
        with self.engine.connect().execution_options(stream_results=True, yield_per=STREAM_PAGE) as conn:
            for row in conn.execute(query):
                yield row.actor_id, row.time, row.patient_id

    def accesses_to(self, patient_id: str, *, not_reasons: Iterable[str] = (), since: datetime | None = None,
                    until: datetime | None = None, actions: Iterable[str] = (), newest_first: bool = False,
                    limit: int | None = None, through: int | None = None) -> list[Entry]:
        """Allowed entries about one patient, in seq order (or newest first), optionally within a time range,
        up to seq ``through`` and with one of the action prefixes, leaving out those whose recorded reason is one of
        ``not_reasons`` (the decisions that let the patients themselves in). What counts is decided by the
        entries alone: they are signed into the log, unlike any table an attacker could edit."""
        clauses = [_columns.patient_id == patient_id, _columns.outcome == "allowed",
                   *filter_clauses(AuditFilter(since=since, until=until, through=through))]
        not_reasons, actions = list(not_reasons), tuple(actions)
        if not_reasons:
            clauses.append(sa.or_(_columns.reason.is_(None), _columns.reason.not_in(not_reasons)))
        if actions:
            clauses.append(_any_prefix(actions))
        order = _columns.seq.desc() if newest_first else _columns.seq
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit_entry).where(*clauses).order_by(order).limit(limit)).all()
        return [entry_from_row(row) for row in rows]

    def distinct_patient_ids(self, filter: AuditFilter) -> set[str]:
        """The patients the matching entries name: e.g. everyone one user's searches listed in the last hour."""
        query = sa.select(_columns.patient_id).distinct().where(*filter_clauses(filter), _columns.patient_id.is_not(None))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())


def _bucket(dialect: str, unit: str) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", _columns.time), "YYYY-MM-DD HH24" if unit == "hour" else "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d %H" if unit == "hour" else "%Y-%m-%d", _columns.time)


def _hour_of_day(dialect: str) -> sa.ColumnElement[int]:
    if dialect == "postgresql":
        return sa.cast(sa.extract("hour", sa.func.timezone("UTC", _columns.time)), sa.Integer)
    return sa.cast(sa.func.strftime("%H", _columns.time), sa.Integer)
