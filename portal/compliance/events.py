"""One audit entry as the console shows it: who (by name), what, and why it deserves a second look."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import Any

from audit import AuditEvent, Entry
from audit.events import format_time
from portal.actions import BREAK_GLASS, CHART_WORK, Action, is_break_glass
from portal.people import display_names

# The clinic's working day (UTC): chart access outside it is flagged.
WORKDAY_START = time(7, 0)
WORKDAY_END = time(19, 0)

AFTER_HOURS_ACTIONS = (CHART_WORK, BREAK_GLASS)  # staff at a chart outside working hours


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


def event_flags(event: AuditEvent) -> tuple[str, ...]:
    """Why an event deserves a second look: denied, break-glass, sign-in failure, after hours."""
    flags = []
    if event.outcome == "denied":
        flags.append("denied")
    if is_break_glass(event.action, event.details):
        flags.append("break-glass")
    if event.action == Action.SIGNIN_FAILURE:
        flags.append("sign-in failure")
    if event.action.startswith(AFTER_HOURS_ACTIONS) and is_after_hours(event.time):
        flags.append("after hours")
    return tuple(flags)


def is_after_hours(moment: datetime) -> bool:
    clock = moment.astimezone(timezone.utc).time()
    return clock < WORKDAY_START or clock >= WORKDAY_END


def event_rows(entries: list[Entry]) -> list[EventRow]:
    """Entries with their actors' names and flags, for listing."""
    names = display_names(entry.event.actor_id for entry in entries)
    return [EventRow(entry, names.get(entry.event.actor_id or ""), event_flags(entry.event)) for entry in entries]
