"""The audit event: who did what to which record, when, and with what outcome.

Events carry identifiers only (user ids, patient ids, resource ids, counts), never PHI
values, so the log itself can be exported to auditors without widening access to charts.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

OUTCOMES = frozenset({"allowed", "denied", "error"})
MAX_DETAILS = 16
MAX_DETAIL_TEXT = 256
MAX_FIELD_TEXT = 512
TRUNCATED = "\u2026"
_TEXT_FIELDS = ("action", "actor_id", "actor_role", "patient_id", "resource_type", "resource_id", "reason",
                "source_ip", "user_agent", "request_id", "session_hash")

DetailValue = str | int | bool | None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with microseconds and 'Z': one spelling per instant, so hashes are stable."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; a missing offset is rejected because it would be ambiguous."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {text!r}")
    return value.astimezone(timezone.utc)


def storable(text: str, limit: int = MAX_FIELD_TEXT) -> str:
    """``text`` as every store can keep it: control characters and lone surrogates written as visible
    escapes (PostgreSQL rejects NUL, UTF-8 cannot encode a surrogate), then cut to ``limit`` characters.

    Idempotent, so an event rebuilt from its stored form hashes the same; values come from requests
    (user agents, reasons, typed identifiers), and nothing a request contains may make an append fail.
    """
    if not text.isprintable():
        text = "".join(_escaped(character) for character in text)
    return text if len(text) <= limit else text[: limit - 1] + TRUNCATED


def _escaped(character: str) -> str:
    category = unicodedata.category(character)
    if category == "Cc" or category == "Cs":
        code = ord(character)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return character


def _check_details(details: Mapping[str, Any]) -> None:
    if len(details) > MAX_DETAILS:
        raise ValueError(f"details may hold at most {MAX_DETAILS} keys")
    for key, value in details.items():
        if not isinstance(key, str) or not key:
            raise ValueError("details keys must be non-empty strings")
        if value is not None and not isinstance(value, (str, int, bool)):
            raise ValueError(f"details[{key!r}] must be str, int, bool or None")


def _storable_details(details: Mapping[str, Any]) -> dict[str, DetailValue]:
    return {storable(key, MAX_DETAIL_TEXT): storable(value, MAX_DETAIL_TEXT) if isinstance(value, str) else value
            for key, value in details.items()}


@dataclass(frozen=True)
class AuditEvent:
    """One audited action. Immutable so an event cannot change between hashing and storing."""

    action: str
    outcome: str
    actor_id: str | None = None
    actor_role: str | None = None
    patient_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    reason: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    session_hash: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)
    time: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if not isinstance(self.action, str) or not self.action:
            raise ValueError("action must be a non-empty string such as 'chart.read'")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {self.outcome!r}")
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise ValueError("time must be a timezone-aware datetime")
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string or None")
                object.__setattr__(self, name, str(value))  # a StrEnum member becomes its plain text
        _check_details(self.details)
        object.__setattr__(self, "time", self.time.astimezone(timezone.utc))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @classmethod
    def create(cls, *, details: Mapping[str, Any] | None = None, **values: Any) -> AuditEvent:
        """A new event from values a request supplied: every text made storable first (``storable``).

        Only new events are made storable: an event rebuilt from the log (``from_dict``) keeps exactly
        what was stored, so it hashes as it did when it was appended, whatever an older version stored.
        """
        texts = {name: storable(str(value)) if name in _TEXT_FIELDS and isinstance(value, str) else value
                 for name, value in values.items()}
        details = dict(details or {})
        _check_details(details)
        return cls(details=_storable_details(details), **texts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; this exact dict is what the chain hashes."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["time"] = format_time(self.time)
        data["details"] = dict(self.details)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Rebuild an event from to_dict() output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown event fields: {sorted(unknown)}")
        values = dict(data)
        values["time"] = parse_time(values["time"]) if "time" in values else utcnow()
        values["details"] = values.get("details") or {}
        return cls(**values)
