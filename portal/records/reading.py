"""Reading a chart to show it: one query per section through SQLAlchemy Core, each field decrypted once.

A page, a JSON response or a FHIR document only shows the chart, so it needs none of what the ORM
builds per row (an instrumented instance, its change tracking, load events). ``read_chart`` returns the
same attribute names as the models (``chart.conditions[0].text``, ``chart.display_name``,
``result.abnormal``), so templates, ``serialize`` and ``fhir`` read either. Writing stays with the ORM
models, whose events seal every value; these records are read-only.
"""
from __future__ import annotations

from types import SimpleNamespace

import sqlalchemy as sa

from portal.crypto import open_row
from portal.db import db_session
from portal.models import Allergy, Condition, LabResult, Medication, Patient, User, VisitNote


class ChartRecord(SimpleNamespace):
    """The patient's values and the chart's sections, newest first, as the ORM's ``Patient`` names them."""

    display_name = property(Patient.display_name.fget)


class ResultRecord(SimpleNamespace):
    abnormal = property(LabResult.abnormal.fget)


# section attribute -> (model, newest-first order, the record type its rows become)
SECTIONS: dict[str, tuple[type, sa.ColumnElement, type]] = {
    "conditions": (Condition, Condition.__table__.c.recorded_at.desc(), SimpleNamespace),
    "medications": (Medication, Medication.__table__.c.recorded_at.desc(), SimpleNamespace),
    "allergies": (Allergy, Allergy.__table__.c.recorded_at.desc(), SimpleNamespace),
    "results": (LabResult, LabResult.__table__.c.observed_at.desc(), ResultRecord),
}


def read_chart(patient_id: str) -> ChartRecord | None:
    """The whole chart of one patient, or None when there is no such patient."""
    connection = db_session.connection()  # the request's own transaction, as the ORM would use
    patient = connection.execute(sa.select(Patient.__table__).where(Patient.__table__.c.id == patient_id)).mappings().first()
    if patient is None:
        return None
    sections = {name: _section(connection, model, order, record, patient_id)
                for name, (model, order, record) in SECTIONS.items()}
    return ChartRecord(**open_row(Patient, patient), **sections, notes=_notes(connection, patient_id))


def _section(connection: sa.Connection, model: type, order: sa.ColumnElement, record: type,
             patient_id: str) -> list[SimpleNamespace]:
    table = model.__table__
    rows = connection.execute(sa.select(table).where(table.c.patient_id == patient_id).order_by(order)).mappings()
    return [record(**open_row(model, row)) for row in rows]


def _notes(connection: sa.Connection, patient_id: str) -> list[SimpleNamespace]:
    """Visit notes with their author's name (a user's display name is encrypted too)."""
    notes, users = VisitNote.__table__, User.__table__
    query = (sa.select(notes, users.c.display_name.label("author_display_name"))
             .outerjoin(users, users.c.id == notes.c.author_id)
             .where(notes.c.patient_id == patient_id).order_by(notes.c.created_at.desc()))
    records = []
    for row in connection.execute(query).mappings():
        values = dict(row)
        author_name = values.pop("author_display_name")
        author = None
        if values["author_id"] is not None:
            author = SimpleNamespace(**open_row(User, {"id": values["author_id"], "display_name": author_name}))
        records.append(SimpleNamespace(**open_row(VisitNote, values), author=author))
    return records
