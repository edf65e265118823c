"""Column conventions shared by the models."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import mapped_column

from portal.crypto import new_id


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite would otherwise hand back naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime: store timezone-aware UTC times")
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def id_column():
    """String UUID primary keys, assigned in Python so encrypted values can be bound to their row."""
    return mapped_column(sa.String(36), primary_key=True, default=new_id)


def timestamp_column(**kwargs):
    return mapped_column(UtcDateTime(), default=utcnow, **kwargs)


def patient_fk(**kwargs):
    return mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True, **kwargs)
