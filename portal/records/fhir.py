"""The patient's chart as a FHIR R4 Bundle (type collection)."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

from portal.models import Patient

LOINC_LAB = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FLAG_CODES = {"H": "H", "L": "L", "HH": "HH", "LL": "LL", "A": "A", "N": "N"}
GENDERS = {"female": "female", "male": "male", "other": "other"}


def _instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def patient_resource(patient: Patient) -> dict:
    telecom = [{"system": "phone", "value": patient.phone}] if patient.phone else []
    if patient.email:
        telecom.append({"system": "email", "value": patient.email})
    resource = {
        "resourceType": "Patient",
        "id": patient.id,
        "identifier": [{"type": {"text": "MRN"}, "system": "urn:riverside-clinic:mrn", "value": patient.mrn}],
        "name": [{"family": patient.family_name, "given": [patient.given_name]}],
        "gender": GENDERS.get((patient.sex or "").lower(), "unknown"),
        "birthDate": patient.birth_date.isoformat(),
        "telecom": telecom,
    }
    if patient.address:
        resource["address"] = [{"text": patient.address}]
    return resource


def _subject(patient: Patient) -> dict:
    return {"reference": f"Patient/{patient.id}"}


def chart_bundle(patient: Patient) -> dict:
    """Patient, Condition, MedicationStatement, AllergyIntolerance, Observation and DocumentReference."""
    resources = [patient_resource(patient)]
    resources += [{
        "resourceType": "Condition", "id": c.id, "subject": _subject(patient), "code": {"text": c.text},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active" if c.status == "active" else "resolved"}]},
        **({"onsetDateTime": c.onset.isoformat()} if c.onset else {}),
        "recordedDate": _instant(c.recorded_at),
    } for c in patient.conditions]
    resources += [{
        "resourceType": "MedicationStatement", "id": m.id, "subject": _subject(patient),
        "status": "active" if m.status == "active" else "completed",
        "medicationCodeableConcept": {"text": m.text},
        **({"dosage": [{"text": m.dosage}]} if m.dosage else {}),
        "dateAsserted": _instant(m.recorded_at),
    } for m in patient.medications]
    resources += [{
        "resourceType": "AllergyIntolerance", "id": a.id, "patient": _subject(patient), "code": {"text": a.substance},
        **({"reaction": [{"manifestation": [{"text": a.reaction}]}]} if a.reaction else {}),
        **({"criticality": "high" if a.severity == "severe" else "low"} if a.severity else {}),
        "recordedDate": _instant(a.recorded_at),
    } for a in patient.allergies]
    resources += [_observation(patient, r) for r in patient.results]
    resources += [{
        "resourceType": "DocumentReference", "id": n.id, "status": "current", "subject": _subject(patient),
        "type": {"text": "Visit note"}, "description": n.title, "date": _instant(n.created_at),
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "title": n.title,
                                    "data": _base64(n.text)}}],
    } for n in patient.notes]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(datetime.now(timezone.utc)),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _observation(patient: Patient, result) -> dict:
    observation = {
        "resourceType": "Observation", "id": result.id, "status": "final", "subject": _subject(patient),
        "category": [{"coding": [LOINC_LAB]}], "code": {"text": result.name},
        "effectiveDateTime": _instant(result.observed_at),
    }
    try:
        observation["valueQuantity"] = {"value": float(result.value), **({"unit": result.unit} if result.unit else {})}
    except ValueError:
        observation["valueString"] = result.value
    if result.reference_range:
        observation["referenceRange"] = [{"text": result.reference_range}]
    if result.flag in FLAG_CODES:
        observation["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": FLAG_CODES[result.flag]}]}]
    return observation


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
