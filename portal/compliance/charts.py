"""The console's charts: events per hour (or day) and per action, with their text alternatives."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from audit import AuditFilter
from portal import services

CHART_DEFAULT_RANGE = timedelta(hours=24)
CHART_HOURLY_MAX = timedelta(days=3)  # longer ranges are charted per day
CHART_MAX_BUCKETS = 120
ACTIONS_CHARTED = 15


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
    bounded = dataclasses.replace(filter, since=start, until=end)
    log = services.audit_store()
    per_bucket = log.time_histogram(bounded, unit)
    per_action = log.action_counts(bounded, ACTIONS_CHARTED)
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    key_format, label_format = ("%Y-%m-%d %H", "%Y-%m-%d %H:00") if unit == "hour" else ("%Y-%m-%d", "%Y-%m-%d")
    times, moment = [], _bucket_start(start, unit)
    while moment < end:
        times.append((moment.strftime(label_format), per_bucket.get(moment.strftime(key_format), 0)))
        moment += step
    return Charts(unit, start, end, _bars(times), _bars(per_action), sum(count for _, count in times))
