"""Search criteria shared by both stores, the CLI export and the portal's compliance console."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from audit.events import AuditEvent, format_time


@dataclass(frozen=True)
class AuditFilter:
    """Entries matching every given criterion; `since` is inclusive and `until` exclusive.

    ``action`` matches as a prefix ("chart" finds chart.read and chart.write; "chart.read" finds
    only itself and its sub-actions). ``through`` bounds the set to seq <= through, so an export,
    its manifest and its audited count describe exactly the same entries while the log grows.
    """

    since: datetime | None = None
    until: datetime | None = None
    actor_id: str | None = None
    patient_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    through: int | None = None

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("filter time bounds must be timezone-aware")

    @property
    def is_empty(self) -> bool:
        """True when the filter selects a prefix of the log, which makes an export the whole log from seq 1 (contiguous)."""
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "through")

    def matches(self, event: AuditEvent, seq: int | None = None) -> bool:
        if self.since is not None and event.time < self.since:
            return False
        if self.until is not None and event.time >= self.until:
            return False
        if self.through is not None and seq is not None and seq > self.through:
            return False
        if self.action is not None and not event.action.startswith(self.action):
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
        if self.action is not None:
            parts.append(f"action^={self.action}")
        if self.through is not None:
            parts.append(f"through_seq={self.through}")
        return " ".join(parts) or "all"

    def _equalities(self) -> dict[str, str | None]:
        return {"actor_id": self.actor_id, "patient_id": self.patient_id, "outcome": self.outcome}
