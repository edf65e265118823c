"""The compliance console's work: audit search, flags, charts, integrity checks, exports, access logs.

Views stay thin: they parse the request with ``parse_filter`` and call these functions. Everything
here reads the audit tables directly (they are append-only) and the portal's ORM only for names
and break-glass grants. Nothing returned here carries clinical content: identifiers, names of
the people involved, and the reasons clinicians typed for emergency access.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import current_app

from audit import (
    OUTCOMES,
    AuditEvent,
    AuditFilter,
    Entry,
    ExportDigest,
    ExportManifest,
    SigningKey,
    VerifyKey,
    VerifyReport,
    audit_entry,
    export_csv,
    export_fhir_ndjson,
    export_jsonl,
    export_manifest,
    verify,
)
from audit.events import format_time
from audit.store import entry_from_row, filter_clauses
from portal import services
from portal.access import record
from portal.db import db_session, transaction
from portal.extensions import socketio
from portal.models import BreakGlass, User

PAGE_SIZE = 50
FLAG_LIMIT = 100
ACCESS_LOG_LIMIT = 200
READ_PAGE = 1000
MAX_ID_LENGTH = 128
MAX_ACTION_LENGTH = 64
ACTION_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")

# Flag rules. Times are UTC; the clinic's working day is 07:00-19:00.
WORKDAY_START = time(7, 0)
WORKDAY_END = time(19, 0)
BULK_READ_PATIENTS = 20  # more distinct charts than this ...
BULK_READ_WINDOW = timedelta(minutes=10)  # ... within this long is flagged
FLAG_DEFAULT_RANGE = timedelta(days=7)
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)
CHART_DEFAULT_RANGE = timedelta(hours=24)
CHART_HOURLY_MAX = timedelta(days=3)  # longer ranges are charted per day
CHART_MAX_BUCKETS = 120
ACTIONS_CHARTED = 15

EXPORT_FORMATS: dict[str, tuple[str, str]] = {  # format -> (mimetype, file extension)
    "csv": ("text/csv", "csv"),
    "jsonl": ("application/jsonl", "jsonl"),
    "fhir": ("application/fhir+ndjson", "ndjson"),
}
CHART_ACCESS_PREFIXES = ("chart.", "break_glass.", "patient.search.hit")
SECTION_LABELS = {
    "chart": "Your chart",
    "results": "A test result",
    "notes": "Visit notes",
    "fhir_bundle": "Download of your chart",
    "break_glass": "Emergency access to your chart",
    "search_result": "Your name and date of birth, in a patient search",
    "disclosures": "The accounting of who accessed your chart (compliance review)",
}


class FilterError(ValueError):
    """A malformed search or export filter; the message is safe to show to the user."""


# --------------------------------------------------------------------------- filters


def filter_query_args(filter: AuditFilter) -> dict[str, str]:
    """The filter as the console's query parameters (for links that keep it)."""
    values = {
        "actor": filter.actor_id, "patient": filter.patient_id, "action": filter.action, "outcome": filter.outcome,
        "since": format_time(filter.since) if filter.since else None,
        "until": format_time(filter.until) if filter.until else None,
        "through": str(filter.through) if filter.through is not None else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def parse_time_input(text: str, name: str) -> datetime:
    """ISO-8601 or an HTML datetime-local value; without an offset the time is UTC. Times outside
    EARLIEST_TIME..LATEST_TIME are refused: ranges are charted and stepped through, and must not overflow."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise FilterError(f"'{name}' must be a date and time such as 2024-05-01T08:30 (UTC) "
                          "or an ISO-8601 timestamp with an offset.") from None
    if not EARLIEST_TIME <= value < LATEST_TIME:
        raise FilterError(f"'{name}' must fall between {EARLIEST_TIME:%Y-%m-%d} and {LATEST_TIME:%Y-%m-%d} (UTC).")
    return value


def _identifier(value: str, name: str) -> str:
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise FilterError(f"'{name}' must be an identifier of at most {MAX_ID_LENGTH} printable characters.")
    return value


def _action(value: str) -> str:
    value = value.lower()
    if len(value) > MAX_ACTION_LENGTH or not set(value) <= ACTION_CHARACTERS:
        raise FilterError("'action' may hold only letters, digits, '.', '_' and '-' (for example chart.read).")
    return value


def _non_negative_int(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise FilterError(f"'{name}' must be a whole number.")
    return int(value)


def parse_filter(values: Mapping[str, str | None]) -> AuditFilter:
    """Build a filter from query parameters or CLI options (actor, patient, action, outcome, since,
    until, through); blank values are ignored. Raises FilterError with a message for the user."""
    text = {key: (value or "").strip() for key, value in values.items()}
    outcome = text.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise FilterError(f"'outcome' must be one of {', '.join(sorted(OUTCOMES))}.")
    since = parse_time_input(text["since"], "since") if text.get("since") else None
    until = parse_time_input(text["until"], "until") if text.get("until") else None
    if since is not None and until is not None and since >= until:
        raise FilterError("'since' must be earlier than 'until'.")
    return AuditFilter(
        since=since,
        until=until,
        actor_id=_identifier(text["actor"], "actor") if text.get("actor") else None,
        patient_id=_identifier(text["patient"], "patient") if text.get("patient") else None,
        action=_action(text["action"]) if text.get("action") else None,
        outcome=outcome,
        through=_non_negative_int(text["through"], "through") if text.get("through") else None,
    )


def parse_cursor(value: str | None) -> int | None:
    """The 'before' page cursor: show entries with a seq lower than this."""
    return _non_negative_int(value.strip(), "before") if value and value.strip() else None


# --------------------------------------------------------------------------- reading entries


def _engine() -> sa.Engine:
    return services.audit_store().engine


def iter_entries(filter: AuditFilter) -> Iterator[Entry]:
    """Matching entries in seq order, keyset-paged by the store: constant memory."""
    return services.audit_store().iter_entries(filter=filter)


def head_seq() -> int:
    return services.audit_store().head()[0]


def get_entry(seq: int) -> Entry | None:
    with _engine().connect() as conn:
        row = conn.execute(sa.select(audit_entry).where(audit_entry.c.seq == seq)).first()
    return entry_from_row(row) if row else None


def user_names(user_ids: Iterable[str | None]) -> dict[str, str]:
    """Display names (decrypted by the ORM) of the given user ids."""
    ids = {user_id for user_id in user_ids if user_id}
    if not ids:
        return {}
    users = db_session.scalars(sa.select(User).where(User.id.in_(ids))).all()
    return {user.id: user.display_name or user.subject for user in users}


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class EventRow:
    """One audit entry as the console lists it."""

    entry: Entry
    actor_name: str | None
    flags: tuple[str, ...] = ()

    @property
    def event(self) -> AuditEvent:
        return self.entry.event

    @property
    def css_class(self) -> str:
        return " ".join(sorted({"denied" if flag == "denied" else "flagged" for flag in self.flags}))

    def to_json(self) -> dict[str, Any]:
        event = self.event
        return {
            "seq": self.entry.seq, "time": format_time(event.time), "actor_id": event.actor_id,
            "actor_name": self.actor_name, "actor_role": event.actor_role, "action": event.action,
            "outcome": event.outcome, "patient_id": event.patient_id, "resource_type": event.resource_type,
            "resource_id": event.resource_id, "reason": event.reason, "details": dict(event.details),
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class SearchPage:
    rows: list[EventRow]
    total: int
    next_before: int | None

    @property
    def count(self) -> int:
        return len(self.rows)


def event_flags(event: AuditEvent) -> tuple[str, ...]:
    """Why an event deserves a second look: denied, break-glass, sign-in failure, after hours."""
    flags = []
    if event.outcome == "denied":
        flags.append("denied")
    if event.action.startswith("break_glass.") or "break_glass" in event.details:
        flags.append("break-glass")
    if event.action.startswith("signin.fail"):
        flags.append("sign-in failure")
    if event.action.startswith("chart.") and is_after_hours(event.time):
        flags.append("after hours")
    return tuple(flags)


def is_after_hours(moment: datetime) -> bool:
    clock = moment.astimezone(timezone.utc).time()
    return clock < WORKDAY_START or clock >= WORKDAY_END


def _rows(entries: list[Entry]) -> list[EventRow]:
    names = user_names(entry.event.actor_id for entry in entries)
    return [EventRow(entry, names.get(entry.event.actor_id or ""), event_flags(entry.event)) for entry in entries]


def search(filter: AuditFilter, before: int | None = None, page_size: int = PAGE_SIZE) -> SearchPage:
    """One page of matching entries, newest first; ``before`` is the seq cursor of the next page."""
    clauses = filter_clauses(filter)
    query = sa.select(audit_entry).where(*clauses)
    if before is not None:
        query = query.where(audit_entry.c.seq < before)
    query = query.order_by(audit_entry.c.seq.desc()).limit(page_size + 1)
    with _engine().connect() as conn:
        rows = conn.execute(query).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(audit_entry).where(*clauses)).scalar_one()
    entries = [entry_from_row(row) for row in rows[:page_size]]
    next_before = entries[-1].seq if len(rows) > page_size else None
    return SearchPage(_rows(entries), total, next_before)


def search_details(filter: AuditFilter, page: SearchPage | None = None, before: int | None = None) -> dict:
    """What the audit.search event records about a search (identifiers and counts only)."""
    details: dict[str, Any] = {"filter": filter.describe()[:256]}
    if before is not None:
        details["before"] = before
    if page is not None:
        details.update(count=page.count, total=page.total)
    return details


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    percent: float  # of the largest bar, for drawing


@dataclass(frozen=True)
class Charts:
    unit: str  # "hour" or "day"
    start: datetime
    end: datetime
    per_time: list[Bar]
    per_action: list[Bar]
    total: int

    @property
    def peak(self) -> Bar | None:
        return max(self.per_time, key=lambda bar: bar.count, default=None) if self.total else None


def _bars(counts: list[tuple[str, int]]) -> list[Bar]:
    top = max((count for _, count in counts), default=0) or 1
    return [Bar(label, count, round(100 * count / top, 1)) for label, count in counts]


def _bucket_expression(dialect: str, unit: str) -> sa.ColumnElement[str]:
    column = audit_entry.c.time
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24" if unit == "hour" else "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d %H" if unit == "hour" else "%Y-%m-%d", column)


def _hour_of_day(dialect: str) -> sa.ColumnElement[int]:
    column = audit_entry.c.time
    if dialect == "postgresql":
        return sa.cast(sa.extract("hour", sa.func.timezone("UTC", column)), sa.Integer)
    return sa.cast(sa.func.strftime("%H", column), sa.Integer)


def chart_range(filter: AuditFilter, now: datetime | None = None) -> tuple[datetime, datetime, str]:
    """The charted window: the filter's range (the last day when it has no start), bucketed per hour
    or per day, and cut to the most recent CHART_MAX_BUCKETS buckets."""
    end = filter.until or (now or datetime.now(timezone.utc))
    start = filter.since or end - CHART_DEFAULT_RANGE
    unit = "hour" if end - start <= CHART_HOURLY_MAX else "day"
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    start = max(start, end - step * CHART_MAX_BUCKETS)
    return start, end, unit


def _bucket_start(moment: datetime, unit: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment if unit == "hour" else moment.replace(hour=0)


def charts(filter: AuditFilter) -> Charts:
    """Events per hour (or day) and per action for the filtered range, zero-filled."""
    start, end, unit = chart_range(filter)
    bounded = AuditFilter(start, end, filter.actor_id, filter.patient_id, filter.action, filter.outcome,
                            filter.through)
    with _engine().connect() as conn:
        bucket = _bucket_expression(conn.dialect.name, unit).label("bucket")
        per_bucket = dict(conn.execute(
            sa.select(bucket, sa.func.count()).where(*filter_clauses(bounded)).group_by(bucket)).all())
        per_action = conn.execute(
            sa.select(audit_entry.c.action, sa.func.count().label("n")).where(*filter_clauses(bounded))
            .group_by(audit_entry.c.action).order_by(sa.desc("n"), audit_entry.c.action).limit(ACTIONS_CHARTED)
        ).all()
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    key_format, label_format = ("%Y-%m-%d %H", "%Y-%m-%d %H:00") if unit == "hour" else ("%Y-%m-%d", "%Y-%m-%d")
    times, moment = [], _bucket_start(start, unit)
    while moment < end:
        times.append((moment.strftime(label_format), int(per_bucket.get(moment.strftime(key_format), 0))))
        moment += step
    return Charts(unit, start, end, _bars(times), _bars([(row.action, row.n) for row in per_action]),
                  sum(count for _, count in times))


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class BreakGlassFlag:
    id: str
    clinician_id: str
    clinician: str
    patient_id: str
    reason: str
    started_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None
    reviewer: str | None


@dataclass(frozen=True)
class BulkReadFlag:
    actor_id: str
    actor_name: str | None
    patients: int
    window_start: datetime
    window_end: datetime


@dataclass
class Flags:
    since: datetime
    until: datetime
    break_glass: list[BreakGlassFlag] = field(default_factory=list)
    denied: list[EventRow] = field(default_factory=list)
    signin_failures: list[EventRow] = field(default_factory=list)
    bulk_reads: list[BulkReadFlag] = field(default_factory=list)
    after_hours: list[EventRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"break_glass": len(self.break_glass), "denied": len(self.denied),
                "signin_failures": len(self.signin_failures), "bulk_reads": len(self.bulk_reads),
                "after_hours": len(self.after_hours)}


def flag_range(filter: AuditFilter, now: datetime | None = None) -> tuple[datetime, datetime]:
    until = filter.until or (now or datetime.now(timezone.utc))
    return filter.since or until - FLAG_DEFAULT_RANGE, until


def _latest(clauses: list[sa.ColumnElement[bool]], limit: int = FLAG_LIMIT) -> list[EventRow]:
    query = sa.select(audit_entry).where(*clauses).order_by(audit_entry.c.seq.desc()).limit(limit)
    with _engine().connect() as conn:
        return _rows([entry_from_row(row) for row in conn.execute(query).all()])


def break_glass_flags(since: datetime, until: datetime, limit: int = FLAG_LIMIT) -> list[BreakGlassFlag]:
    """Grants awaiting review (whenever they started) first, then those reviewed in the range."""
    in_range = sa.and_(BreakGlass.started_at >= since, BreakGlass.started_at < until)
    grants = db_session.scalars(
        sa.select(BreakGlass).where(sa.or_(BreakGlass.reviewed_at.is_(None), in_range))
        .order_by(BreakGlass.reviewed_at.is_not(None), BreakGlass.started_at.desc()).limit(limit)
    ).all()
    names = user_names([grant.user_id for grant in grants] + [grant.reviewed_by for grant in grants])
    return [
        BreakGlassFlag(grant.id, grant.user_id, names.get(grant.user_id, grant.user_id), grant.patient_id,
                       grant.reason, grant.started_at, grant.expires_at, grant.reviewed_at,
                       names.get(grant.reviewed_by or "", grant.reviewed_by))
        for grant in grants
    ]


def bulk_reads(since: datetime, until: datetime) -> list[BulkReadFlag]:
    """Users who read (or were shown in searches) more than BULK_READ_PATIENTS distinct charts within
    BULK_READ_WINDOW.

    One streamed pass over the range's chart reads, ordered by user and time, with a sliding window;
    each user is reported once, with their busiest window.
    """
    columns = audit_entry.c
    query = (
        sa.select(columns.actor_id, columns.time, columns.patient_id)
        .where(columns.time >= since, columns.time < until,
               sa.or_(columns.action.startswith("chart."), columns.action == "patient.search.hit"),
               columns.outcome == "allowed", columns.actor_id.is_not(None), columns.patient_id.is_not(None))
        .order_by(columns.actor_id, columns.time)
    )
    with _engine().connect().execution_options(stream_results=True, yield_per=READ_PAGE) as conn:
        worst = busiest_windows((row.actor_id, row.time, row.patient_id) for row in conn.execute(query))
    names = user_names(worst)
    return sorted((BulkReadFlag(actor, names.get(actor), *found) for actor, found in worst.items()),
                  key=lambda flag: -flag.patients)


def busiest_windows(reads: Iterable[tuple[str, datetime, str]], threshold: int = BULK_READ_PATIENTS,
                    window: timedelta = BULK_READ_WINDOW) -> dict[str, tuple[int, datetime, datetime]]:
    """actor -> (distinct patients, window start, window end) of their busiest window, for actors
    whose busiest window held more than ``threshold`` distinct patients. ``reads`` are
    (actor, time, patient) ordered by actor, then time."""
    worst: dict[str, tuple[int, datetime, datetime]] = {}
    actor: str | None = None
    recent: deque[tuple[datetime, str]] = deque()
    seen: Counter[str] = Counter()
    for reader, moment, patient in reads:
        if reader != actor:
            actor, recent, seen = reader, deque(), Counter()
        recent.append((moment, patient))
        seen[patient] += 1
        while moment - recent[0][0] > window:
            _, old = recent.popleft()
            seen[old] -= 1
            if not seen[old]:
                del seen[old]
        if len(seen) > threshold and len(seen) > worst.get(reader, (0,))[0]:
            worst[reader] = (len(seen), recent[0][0], moment)
    return worst


def flags(filter: AuditFilter) -> Flags:
    """Everything the flagged view lists for the filter's range (the last week by default)."""
    since, until = flag_range(filter)
    columns = audit_entry.c
    in_range = [columns.time >= since, columns.time < until]
    with _engine().connect() as conn:
        hour = _hour_of_day(conn.dialect.name)
    return Flags(
        since=since,
        until=until,
        break_glass=break_glass_flags(since, until),
        denied=_latest(in_range + [columns.outcome == "denied", ~columns.action.startswith("signin.")]),
        signin_failures=_latest(in_range + [columns.action.startswith("signin.fail")]),
        bulk_reads=bulk_reads(since, until),
        after_hours=_latest(in_range + [
            sa.or_(columns.action.startswith("chart."), columns.action.startswith("break_glass.")),
            sa.or_(hour < WORKDAY_START.hour, hour >= WORKDAY_END.hour),
        ]),
    )


def review_break_glass(grant_id: str, reviewer_id: str) -> BreakGlass | None:
    """Mark a grant reviewed (once; a second review keeps the first). None when there is no such grant."""
    with transaction() as session:
        grant = session.get(BreakGlass, grant_id)
        if grant is not None and grant.reviewed_at is None:
            grant.reviewed_at = datetime.now(timezone.utc)
            grant.reviewed_by = reviewer_id
    return grant


def break_glass_grant(grant_id: str) -> BreakGlass | None:
    return db_session.get(BreakGlass, grant_id)


# --------------------------------------------------------------------------- event detail


@dataclass(frozen=True)
class EventDetail:
    row: EventRow
    hash_ok: bool
    break_glass: BreakGlassFlag | None


def event_detail(seq: int) -> EventDetail | None:
    entry = get_entry(seq)
    if entry is None:
        return None
    row = _rows([entry])[0]
    grant_id = entry.event.details.get("break_glass")
    grant = break_glass_grant(str(grant_id)) if grant_id else None
    flag = None
    if grant is not None:
        names = user_names([grant.user_id, grant.reviewed_by])
        flag = BreakGlassFlag(grant.id, grant.user_id, names.get(grant.user_id, grant.user_id), grant.patient_id,
                              grant.reason, grant.started_at, grant.expires_at, grant.reviewed_at,
                              names.get(grant.reviewed_by or "", grant.reviewed_by))
    return EventDetail(row, entry.hash_ok(), flag)


# --------------------------------------------------------------------------- integrity


def verify_key() -> VerifyKey:
    return _signing_key().verify_key


def _signing_key() -> SigningKey:
    return current_app.extensions["portal.audit_signing_key"]


def verify_log(progress: Callable[[int], Any] | None = None,
               observe: Callable[[Entry], Any] | None = None) -> VerifyReport:
    """Verify the whole chain and its checkpoints against the portal's own public key.

    The checkpoints are those that exist when verification starts, all of them: each was signed
    under the append lock, so an intact log reaches its count, and one cut short is reported as
    truncated. (Filtering them by the current head would hide exactly that: a deleted tail lowers
    the head.) Checkpoints signed while the entries stream are left for the next run.
    ``observe`` sees each entry as it is handed to the verifier; trust what it saw only if the
    report is ok.
    """
    store = services.audit_store()
    checkpoints = list(store.iter_checkpoints())  # one per checkpoint_every entries: small
    entries = store.iter_entries()
    if observe is not None:
        entries = _observed(entries, observe)

    def every_thousand(count: int) -> None:
        socketio.sleep(0)  # hashing a long log must not stall every other request of this worker
        if progress is not None:
            progress(count)

    return verify(entries, checkpoints, verify_key(), every_thousand)


def _observed(entries: Iterable[Entry], observe: Callable[[Entry], Any]) -> Iterator[Entry]:
    for entry in entries:
        observe(entry)
        yield entry


def verification_details(report: VerifyReport) -> dict[str, Any]:
    """The result as the audit.verify event records it."""
    details: dict[str, Any] = {"ok": report.ok, "entries": report.entries_checked,
                               "checkpoints": report.checkpoints_checked, "key_id": report.key_id}
    if report.problem is not None:
        details.update(problem=report.problem.kind, position=report.problem.position,
                       message=report.problem.message[:256])
    return details


def run_verification(actor_role: str | None = None, progress: bool = False) -> VerifyReport:
    """Verify the log and record the result as an audit.verify event (for the CLI)."""
    if progress:
        from tqdm import tqdm

        with tqdm(total=services.audit_store().count(), unit="entries", file=sys.stderr, delay=1.0,
                  disable=None, leave=False) as bar:
            report = verify_log(bar.update)
    else:
        report = verify_log()
    record("audit.verify", "allowed", actor_role=actor_role, reason="audit log verification",
           details=verification_details(report))
    return report


@dataclass(frozen=True)
class LastVerification:
    seq: int
    time: datetime
    actor_name: str | None
    actor_role: str | None
    ok: bool
    entries: int | None
    checkpoints: int | None
    problem: str | None
    position: int | None
    message: str | None


def last_verification() -> LastVerification | None:
    """The newest audit.verify result, read back from the audit log itself."""
    columns = audit_entry.c
    with _engine().connect() as conn:
        row = conn.execute(sa.select(audit_entry).where(columns.action == "audit.verify", columns.outcome == "allowed")
                           .order_by(columns.seq.desc()).limit(1)).first()
    if row is None:
        return None
    entry = entry_from_row(row)
    details = entry.event.details
    return LastVerification(
        entry.seq, entry.event.time, user_names([entry.event.actor_id]).get(entry.event.actor_id or ""),
        entry.event.actor_role, details.get("ok") is True, details.get("entries"), details.get("checkpoints"),
        details.get("problem"), details.get("position"), details.get("message"),
    )


# --------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class PreparedExport:
    """An export ready to stream: its exact entry set (bounded by seq), count and signed manifest."""

    fmt: str
    filter: AuditFilter
    manifest: ExportManifest

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def mimetype(self) -> str:
        return EXPORT_FORMATS[self.fmt][0]

    @property
    def filename(self) -> str:
        return f"audit-export-through-{self.filter.through}.{EXPORT_FORMATS[self.fmt][1]}"

    def manifest_json(self) -> str:
        return json.dumps(self.manifest.to_dict(), indent=2, sort_keys=True) + "\n"

    def manifest_header(self) -> str:
        """The signed manifest as base64 of its canonical JSON, for the X-Audit-Manifest header."""
        return base64.b64encode(json.dumps(self.manifest.to_dict(), sort_keys=True).encode()).decode("ascii")

    def audit_details(self, destination: str) -> dict[str, Any]:
        return {"format": self.fmt, "count": self.count, "filter": self.filter.describe()[:256],
                "digest": self.manifest.digest, "destination": destination}

    def chunks(self) -> Iterator[str]:
        """The export body, streamed in ~64 KiB chunks; JSONL ends with its own signed manifest."""
        entries = iter_entries(self.filter)
        if self.fmt == "jsonl":
            store = services.audit_store()
            return export_jsonl(entries, _signing_key(), filter=self.filter, checkpoints=store.iter_checkpoints())
        if self.fmt == "csv":
            return export_csv(entries)
        return export_fhir_ndjson(entries)


def check_format(fmt: str | None) -> str:
    if fmt not in EXPORT_FORMATS:
        raise FilterError(f"'format' must be one of {', '.join(EXPORT_FORMATS)}.")
    return fmt


def prepare_export(filter: AuditFilter, fmt: str) -> PreparedExport:
    """Fix the entry set (seq <= the current head unless the filter already says), count it and
    sign its manifest in one read pass; the export streams the same set in a second pass."""
    fmt = check_format(fmt)
    head = head_seq()
    through = head if filter.through is None else min(filter.through, head)
    filter = dataclasses.replace(filter, through=through)  # never beyond today's head: body == manifest
    digest = ExportDigest.of(iter_entries(filter))
    return PreparedExport(fmt, filter, export_manifest(fmt, digest, _signing_key(), filter=filter))


def export_to_file(filter: AuditFilter, fmt: str, output_path: Path | str, actor_role: str | None = None) -> int:
    """Write an export to a file (for the CLI), audited before it is written. CSV and FHIR get
    their signed manifest beside them as FILE.manifest.json. Returns the number of entries."""
    if not isinstance(filter, AuditFilter):
        filter = AuditFilter(filter.since, filter.until, filter.actor_id, filter.patient_id, filter.action,
                               filter.outcome)
    export = prepare_export(filter, fmt)
    record("audit.export", "allowed", actor_role=actor_role, reason="audit log export",
           details=export.audit_details("file"))
    path = Path(output_path)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(export.chunks())
    if fmt != "jsonl":
        Path(f"{path}.manifest.json").write_text(export.manifest_json(), encoding="utf-8")
    return export.count


# --------------------------------------------------------------------------- the patient's view


@dataclass(frozen=True)
class AccessLogEntry:
    time: datetime
    who: str
    role: str
    what: str
    break_glass: bool


def _access_description(event: AuditEvent) -> str:
    if event.action == "chart.write":
        return "Added to your chart"
    if event.action.startswith("break_glass."):
        return SECTION_LABELS["break_glass"]
    return SECTION_LABELS.get(event.resource_type or "", (event.resource_type or "Your chart").replace("_", " "))


def accesses_by_others(patient_id: str) -> sa.Select:
    """Audit entries of allowed accesses to this patient's chart by anyone but the patient's own accounts."""
    columns = audit_entry.c
    own_accounts = list(db_session.scalars(sa.select(User.id).where(User.patient_id == patient_id)))
    return sa.select(audit_entry).where(
        columns.patient_id == patient_id, columns.outcome == "allowed",
        sa.or_(columns.actor_id.is_(None), columns.actor_id.not_in(own_accounts)) if own_accounts else sa.true())


def chart_access_log(patient_id: str, limit: int = ACCESS_LOG_LIMIT) -> list[AccessLogEntry]:
    """Who opened this patient's chart (other people only, successful accesses, newest first)."""
    columns = audit_entry.c
    query = (
        accesses_by_others(patient_id)
        .where(sa.or_(*(columns.action.startswith(prefix) for prefix in CHART_ACCESS_PREFIXES)))
        .order_by(columns.seq.desc())
        .limit(limit)
    )
    with _engine().connect() as conn:
        entries = [entry_from_row(row) for row in conn.execute(query).all()]
    names = user_names(entry.event.actor_id for entry in entries)
    return [
        AccessLogEntry(
            time=entry.event.time,
            who=names.get(entry.event.actor_id or "", "Clinic staff"),
            role=(entry.event.actor_role or "staff").replace(",", ", ").title(),
            what=_access_description(entry.event),
            break_glass=entry.event.action.startswith("break_glass.") or "break_glass" in entry.event.details,
        )
        for entry in entries
    ]
