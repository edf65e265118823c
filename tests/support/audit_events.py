"""Audit events for store tests: numbered, spread over actors and patients, one second apart."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from audit import AuditEvent

START = datetime(2024, 5, 1, tzinfo=timezone.utc)


def numbered_event(i: int) -> AuditEvent:
    """The i-th chart read of a sample log (its details carry i, so every entry hashes differently)."""
    return AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 3}", patient_id=f"p{i % 5}",
                      details={"i": i}, time=START + timedelta(seconds=i))
