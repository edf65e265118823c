"""The flagged view: break-glass accesses to review, denials, failed sign-ins, bulk reading, after hours."""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from audit import AuditFilter
from portal import services
from portal.actions import CHART_WORK, SIGN_IN, Action
from portal.compliance.events import AFTER_HOURS_ACTIONS, WORKDAY_END, WORKDAY_START, EventRow, event_rows
from portal.db import db_session, transaction
from portal.models import BreakGlass
from portal.people import display_names

FLAG_LIMIT = 100
FLAG_DEFAULT_RANGE = timedelta(days=7)
BULK_READ_PATIENTS = 20  # more distinct charts than this ...
BULK_READ_WINDOW = timedelta(minutes=10)  # ... within this long is flagged
# Reading a chart, or being shown a patient by a search, counts towards bulk reading.
BULK_READ_ACTIONS = (CHART_WORK, Action.PATIENT_SEARCH_HIT)


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


def grant_flag(grant: BreakGlass) -> BreakGlassFlag:
    names = display_names([grant.user_id, grant.reviewed_by])
    return _flag(grant, names)


def _flag(grant: BreakGlass, names: dict[str, str]) -> BreakGlassFlag:
    return BreakGlassFlag(grant.id, grant.user_id, names.get(grant.user_id, grant.user_id), grant.patient_id,
                          grant.reason, grant.started_at, grant.expires_at, grant.reviewed_at,
                          names.get(grant.reviewed_by or "", grant.reviewed_by))


def break_glass_flags(since: datetime, until: datetime, limit: int = FLAG_LIMIT) -> list[BreakGlassFlag]:
    """Grants awaiting review (whenever they started) first, then those reviewed in the range."""
    in_range = sa.and_(BreakGlass.started_at >= since, BreakGlass.started_at < until)
    grants = db_session.scalars(
        sa.select(BreakGlass).where(sa.or_(BreakGlass.reviewed_at.is_(None), in_range))
        .order_by(BreakGlass.reviewed_at.is_not(None), BreakGlass.started_at.desc()).limit(limit)
    ).all()
    names = display_names([grant.user_id for grant in grants] + [grant.reviewed_by for grant in grants])
    return [_flag(grant, names) for grant in grants]


def bulk_reads(since: datetime, until: datetime) -> list[BulkReadFlag]:
    """Users who read (or were shown in searches) more than BULK_READ_PATIENTS distinct charts within
    BULK_READ_WINDOW: one streamed pass with a sliding window; each user reported once, at their busiest."""
    worst = busiest_windows(services.audit_store().reads_by_actor(since, until, BULK_READ_ACTIONS))
    names = display_names(worst)
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
    in_range = AuditFilter(since=since, until=until)
    log = services.audit_store()
    return Flags(
        since=since,
        until=until,
        break_glass=break_glass_flags(since, until),
        denied=event_rows(log.latest(AuditFilter(since=since, until=until, outcome="denied"), FLAG_LIMIT,
                                     not_actions=[SIGN_IN])),
        signin_failures=event_rows(log.latest(AuditFilter(since=since, until=until, action=Action.SIGNIN_FAILURE),
                                              FLAG_LIMIT)),
        bulk_reads=bulk_reads(since, until),
        after_hours=event_rows(log.latest(in_range, FLAG_LIMIT, actions=AFTER_HOURS_ACTIONS,
                                          outside_hours=(WORKDAY_START.hour, WORKDAY_END.hour))),
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
