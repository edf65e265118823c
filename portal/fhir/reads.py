"""Reading a chart's FHIR resources: whose a resource is (before any decision), then the resources themselves."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from portal.db import db_session
from portal.exceptions import found
from portal.models import Patient, VisitNote
from portal.records import fhir

# What each type loads with the patient: only the section searched, not the whole chart.
SECTION_LOADED = {
    "Patient": (),
    "Condition": (selectinload(Patient.conditions),),
    "MedicationRequest": (selectinload(Patient.medications),),
    "AllergyIntolerance": (selectinload(Patient.allergies),),
    "Observation": (selectinload(Patient.results),),
    "DocumentReference": (selectinload(Patient.notes).joinedload(VisitNote.author),),
}


def owner_of(resource_type: str, resource_id: str) -> str | None:
    """The chart a resource belongs to (its patient id), reading no encrypted value; None when there is none."""
    model = fhir.MAPPINGS[resource_type][0]
    column = model.id if model is Patient else model.patient_id
    return db_session.scalar(sa.select(column).where(model.id == resource_id))


def resource(resource_type: str, resource_id: str) -> dict:
    model, mapping = fhir.MAPPINGS[resource_type]
    options = (joinedload(VisitNote.author),) if model is VisitNote else ()
    row = found(db_session.get(model, resource_id, options=options), f"There is no {resource_type}/{resource_id}.")
    return mapping(row)


def chart_resources(patient_id: str, resource_type: str) -> list[dict]:
    """Every resource of one type in a chart, in the chart's order (newest first)."""
    patient = found(db_session.get(Patient, patient_id, options=SECTION_LOADED[resource_type]))
    return fhir.resources_of(patient, resource_type)
