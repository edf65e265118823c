"""The compliance console's pure rules: filter parsing, prefix matching, flags and chart windows."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from audit import AuditEvent, AuditFilter
from portal.compliance.charts import chart_range
from portal.compliance.events import event_flags, is_after_hours
from portal.compliance.filters import filter_query_args, parse_cursor, parse_filter
from portal.compliance.flags import busiest_windows
from portal.exceptions import FilterError

UTC = timezone.utc


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 5, 1, hour, minute, second, tzinfo=UTC)


def test_parse_filter_accepts_datetime_local_and_iso():
    parsed = parse_filter({"since": "2024-05-01T06:30", "until": "2024-05-01T09:00:00+02:00", "actor": " u1 ",
                           "patient": "", "action": "Chart.", "outcome": "denied"})
    assert parsed.since == at(6, 30) and parsed.until == at(7)
    assert (parsed.actor_id, parsed.patient_id, parsed.action, parsed.outcome) == ("u1", None, "chart.", "denied")
    assert parse_filter({"since": "2024-05-01T07:30:00Z"}).since == at(7, 30)
    assert parse_filter({"since": "2024-05-01"}).since == at(0)
    assert parse_filter({key: None for key in ("since", "until", "actor", "patient", "action", "outcome")}).is_empty


@pytest.mark.parametrize(("values", "message"), [
    ({"since": "yesterday"}, "'since' must be"),
    ({"until": "2024-13-01T00:00"}, "'until' must be"),
    ({"since": "2024-05-02", "until": "2024-05-01"}, "earlier than"),
    ({"since": "2024-05-01", "until": "2024-05-01"}, "earlier than"),
    ({"outcome": "maybe"}, "'outcome' must be"),
    ({"action": "chart read; drop"}, "'action' may hold"),
    ({"actor": "x" * 129}, "'actor' must be"),
    ({"patient": "p\n1"}, "'patient' must be"),
    ({"through": "-1"}, "'through' must be"),
])
def test_parse_filter_rejects_malformed_input_with_a_message(values, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(values)


def test_cursor():
    assert parse_cursor(None) is None and parse_cursor(" ") is None and parse_cursor("42") == 42
    with pytest.raises(FilterError):
        parse_cursor("4e2")


def test_action_matches_as_a_prefix_and_describes_itself():
    audit_filter = AuditFilter(action="chart.read", patient_id="p1", through=9)
    assert audit_filter.matches(AuditEvent(action="chart.read", outcome="allowed", patient_id="p1"))
    assert audit_filter.matches(AuditEvent(action="chart.read.section", outcome="allowed", patient_id="p1"))
    assert not audit_filter.matches(AuditEvent(action="chart.write", outcome="allowed", patient_id="p1"))
    assert not audit_filter.matches(AuditEvent(action="chart.read", outcome="allowed", patient_id="p2"))
    assert audit_filter.describe() == "patient_id=p1 action^=chart.read through_seq=9"
    assert AuditFilter(through=9).is_empty and AuditFilter().describe() == "all"
    assert parse_filter(filter_query_args(audit_filter)) == audit_filter


def test_working_hours_are_07_to_19_utc():
    assert is_after_hours(at(6, 59, 59)) and is_after_hours(at(19)) and is_after_hours(at(23, 30))
    assert not is_after_hours(at(7)) and not is_after_hours(at(18, 59, 59))
    assert is_after_hours(datetime(2024, 5, 1, 20, 30, tzinfo=timezone(timedelta(hours=2)))) is False


def test_event_flags():
    assert event_flags(AuditEvent(action="chart.read", outcome="allowed", time=at(10))) == ()
    assert event_flags(AuditEvent(action="chart.read", outcome="denied", time=at(22))) == ("denied", "after hours")
    assert "break-glass" in event_flags(AuditEvent(action="chart.read", outcome="allowed", time=at(10),
                                                   details={"break_glass": "g1"}))
    assert "sign-in failure" in event_flags(AuditEvent(action="signin.failure", outcome="denied"))
    # Break-glass at night is after hours too, as in the console's after-hours list.
    assert event_flags(AuditEvent(action="break_glass.open", outcome="allowed", time=at(23))) == \
        ("break-glass", "after hours")
    assert event_flags(AuditEvent(action="signout", outcome="allowed", time=at(23))) == ()


def test_busiest_windows_counts_distinct_patients_in_a_sliding_window():
    start = at(10)
    reads = [("dr.a", start + timedelta(seconds=20 * i), f"p{i}") for i in range(21)]  # 21 charts in 400 s
    reads += [("dr.a", start + timedelta(seconds=401), "p0")]  # a repeat does not count twice
    reads += [("dr.b", start + timedelta(minutes=i), f"p{i}") for i in range(30)]  # 30 charts, one a minute
    found = busiest_windows(reads, threshold=20, window=timedelta(minutes=10))
    assert found == {"dr.a": (21, start, start + timedelta(seconds=400))}
    assert busiest_windows(reads, threshold=21, window=timedelta(minutes=10)) == {}
    assert busiest_windows(reads, threshold=20, window=timedelta(minutes=30))["dr.b"][0] == 30


def test_chart_range_defaults_to_the_last_day_per_hour():
    now = at(12)
    assert chart_range(AuditFilter(), now) == (at(12) - timedelta(days=1), now, "hour")
    start, end, unit = chart_range(AuditFilter(since=at(0) - timedelta(days=10)), now)
    assert unit == "day" and end == now and start == at(0) - timedelta(days=10)
    start, _, unit = chart_range(AuditFilter(since=datetime(2000, 1, 1, tzinfo=UTC)), now)
    assert unit == "day" and start == now - timedelta(days=120)
