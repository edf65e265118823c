"""Reading the console's filters from query parameters (or CLI options), with messages people understand."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from audit import OUTCOMES, AuditFilter
from audit.events import format_time
from portal.exceptions import FilterError

MAX_ID_LENGTH = 128
MAX_ACTION_LENGTH = 64
ACTION_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
# Ranges are charted and stepped through by the hour or day: the calendar's ends would overflow.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)
FILTER_FIELDS = ("actor", "patient", "action", "outcome", "since", "until", "through")


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
    EARLIEST_TIME..LATEST_TIME are refused."""
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
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
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


def parse_whole_number(value: str | None, name: str) -> int | None:
    """A whole number from the query, None when it is absent or blank."""
    return _non_negative_int(value.strip(), name) if value and value.strip() else None


def parse_cursor(value: str | None) -> int | None:
    """The 'before' page cursor: show entries with a seq lower than this."""
    return parse_whole_number(value, "before")
