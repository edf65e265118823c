"""Search criteria shared by both stores, the CLI export and the portal's compliance console."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from audit.events import AuditEvent, format_time


@dataclass(frozen=True)
class AuditFilter:
    """Entries matching every given criterion; `since` is inclusive and `until` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    actor_id: str | None = None
    patient_id: str | None = None
    action: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("filter time bounds must be timezone-aware")

    @property
    def is_empty(self) -> bool:
        """True when the filter selects everything, which makes an export a contiguous chain segment."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def matches(self, event: AuditEvent) -> bool:
        if self.since is not None and event.time < self.since:
            return False
        if self.until is not None and event.time >= self.until:
            return False
        return all(
            expected is None or getattr(event, name) == expected
            for name, expected in self._equalities().items()
        )

    def describe(self) -> str:
        """A stable text for export manifests, so an auditor sees what subset they were given."""
        parts = []
        if self.since is not None:
            parts.append(f"since={format_time(self.since)}")
        if self.until is not None:
            parts.append(f"until={format_time(self.until)}")
        parts.extend(f"{name}={value}" for name, value in self._equalities().items() if value is not None)
        return " ".join(parts) or "all"

    def _equalities(self) -> dict[str, str | None]:
        return {
            "actor_id": self.actor_id,
            "patient_id": self.patient_id,
            "action": self.action,
            "outcome": self.outcome,
        }
