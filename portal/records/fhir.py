"""The chart as FHIR R4 resources shaped by US Core: one mapping for the download and the FHIR API.

Codes where the data has them (LOINC for lab results whose test is known), text where it does not,
and the ``data-absent-reason`` extension where a required element has no value, as US Core's
guidance says. ``chart_bundle`` is the patient's download (a ``collection`` Bundle); the FHIR API
(``portal.fhir``) serves the same resources one by one and in search Bundles.
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timezone

from portal.models import Allergy, Condition, LabResult, Medication, Patient, VisitNote

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
PROFILES = {
    "Patient": US_CORE + "us-core-patient",
    "Condition": US_CORE + "us-core-condition-problems-health-concerns",
    "MedicationRequest": US_CORE + "us-core-medicationrequest",
    "AllergyIntolerance": US_CORE + "us-core-allergyintolerance",
    "Observation": US_CORE + "us-core-observation-lab",
    "DocumentReference": US_CORE + "us-core-documentreference",
}
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN_SYSTEM = "urn:riverside-clinic:mrn"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
OBSERVATION_CATEGORY = TERMINOLOGY + "observation-category"
CONDITION_CATEGORY = TERMINOLOGY + "condition-category"
DOCUMENT_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
LAB_CATEGORY = {"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}
PROBLEM_CATEGORY = {"system": CONDITION_CATEGORY, "code": "problem-list-item", "display": "Problem List Item"}
NOTE_CATEGORY = {"system": DOCUMENT_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
#: The categories every resource of a type has (they do not depend on the chart's values): what a scope's
#: ``?category=`` restriction is checked against before anything is read.
FIXED_CATEGORIES = {
    "Observation": ((OBSERVATION_CATEGORY, "laboratory"),),
    "Condition": ((CONDITION_CATEGORY, "problem-list-item"),),
    "DocumentReference": ((DOCUMENT_CATEGORY, "clinical-note"),),
}
PROGRESS_NOTE = {"system": LOINC, "code": "11506-3", "display": "Progress note"}
INTERPRETATION = TERMINOLOGY + "v3-ObservationInterpretation"
FLAG_CODES = {"H": "H", "L": "L", "HH": "HH", "LL": "LL", "A": "A", "N": "N"}
GENDERS = {"female": "female", "male": "male", "other": "other"}
# UCUM codes of the units the clinic's results use (the unit as written stays in ``unit``).
UCUM_CODES = {"%": "%", "mmol/L": "mmol/L", "µmol/L": "umol/L", "mU/L": "m[IU]/L", "g/L": "g/L", "mg/dL": "mg/dL"}
MEDICATION_STATUSES = {"active": "active", "stopped": "stopped", "completed": "completed", "on-hold": "on-hold"}


def instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _resource(resource_type: str, resource_id: str, **elements: object) -> dict:
    """A resource of ``resource_type`` claiming its US Core profile, its elements in the order given."""
    return {"resourceType": resource_type, "id": resource_id, "meta": {"profile": [PROFILES[resource_type]]}, **elements}


def _coded(system: str, code: str, display: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code, **({"display": display} if display else {})}]}


def _absent(reason: str = "unknown") -> dict:
    """An element US Core requires that the data has no value for."""
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": reason}]}


def subject(patient_id: str) -> dict:
    return {"reference": f"Patient/{patient_id}"}


def patient_resource(patient: Patient) -> dict:
    telecom = [{"system": "phone", "value": patient.phone, "use": "home"}] if patient.phone else []
    if patient.email:
        telecom.append({"system": "email", "value": patient.email})
    resource = _resource("Patient", patient.id,
        identifier=[{"use": "usual", "type": _coded(TERMINOLOGY + "v2-0203", "MR", "Medical record number"),
                     "system": MRN_SYSTEM, "value": patient.mrn}],
        name=[{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        gender=GENDERS.get((patient.sex or "").lower(), "unknown"),
        birthDate=patient.birth_date.isoformat(),
    )
    if telecom:
        resource["telecom"] = telecom
    if patient.address:
        resource["address"] = [{"text": patient.address}]
    return resource


def condition_resource(condition: Condition) -> dict:
    resource = _resource("Condition", condition.id,
        clinicalStatus=_coded(TERMINOLOGY + "condition-clinical", "active" if condition.status == "active" else "resolved"),
        verificationStatus=_coded(TERMINOLOGY + "condition-ver-status", "confirmed"),
        category=[{"coding": [PROBLEM_CATEGORY]}],
        code={"text": condition.text},
        subject=subject(condition.patient_id),
        recordedDate=instant(condition.recorded_at),
    )
    if condition.onset:
        resource["onsetDateTime"] = condition.onset.isoformat()
    return resource


def medication_request_resource(medication: Medication) -> dict:
    resource = _resource("MedicationRequest", medication.id,
        status=MEDICATION_STATUSES.get(medication.status, "unknown"),
        intent="order",
        medicationCodeableConcept={"text": medication.text},
        subject=subject(medication.patient_id),
        authoredOn=instant(medication.recorded_at),
        # Who prescribed it is not recorded: US Core asks for the reason it is absent.
        requester=_absent(),
    )
    if medication.dosage:
        resource["dosageInstruction"] = [{"text": medication.dosage}]
    return resource


def allergy_resource(allergy: Allergy) -> dict:
    resource = _resource("AllergyIntolerance", allergy.id,
        clinicalStatus=_coded(TERMINOLOGY + "allergyintolerance-clinical", "active"),
        verificationStatus=_coded(TERMINOLOGY + "allergyintolerance-verification", "confirmed"),
        code={"text": allergy.substance},
        patient=subject(allergy.patient_id),
        recordedDate=instant(allergy.recorded_at),
    )
    if allergy.severity:
        resource["criticality"] = "high" if allergy.severity == "severe" else "low"
    if allergy.reaction:
        reaction: dict = {"manifestation": [{"text": allergy.reaction}]}
        if allergy.severity in ("mild", "moderate", "severe"):
            reaction["severity"] = allergy.severity
        resource["reaction"] = [reaction]
    return resource


def observation_resource(result: LabResult) -> dict:
    code: dict = {"text": result.name}
    if result.loinc_code:
        code["coding"] = [{"system": LOINC, "code": result.loinc_code}]
    observation = _resource("Observation", result.id, status="final",
        category=[{"coding": [LAB_CATEGORY]}], code=code, subject=subject(result.patient_id),
        effectiveDateTime=instant(result.observed_at),
    )
    try:
        quantity: dict = {"value": float(result.value)}
    except ValueError:
        observation["valueString"] = result.value
    else:
        if result.unit:
            quantity["unit"] = result.unit
            if result.unit in UCUM_CODES:
                quantity.update(system=UCUM, code=UCUM_CODES[result.unit])
        observation["valueQuantity"] = quantity
    if result.reference_range:
        observation["referenceRange"] = [{"text": result.reference_range}]
    if result.flag in FLAG_CODES:
        observation["interpretation"] = [_coded(INTERPRETATION, FLAG_CODES[result.flag])]
    return observation


def document_reference_resource(note: VisitNote) -> dict:
    return _resource("DocumentReference", note.id,
        status="current",
        type={"coding": [PROGRESS_NOTE], "text": "Visit note"},
        category=[{"coding": [NOTE_CATEGORY]}],
        subject=subject(note.patient_id),
        date=instant(note.created_at),
        **({"author": [{"display": note.author.display_name}]} if note.author and note.author.display_name else {}),
        description=note.title,
        content=[{"attachment": {"contentType": "text/plain; charset=utf-8", "title": note.title,
                                 "data": _base64(note.text), "creation": instant(note.created_at)}}],
    )


#: Each FHIR type the portal serves: the model it comes from and its mapping.
MAPPINGS: dict[str, tuple[type, Callable[..., dict]]] = {
    "Patient": (Patient, patient_resource),
    "Condition": (Condition, condition_resource),
    "MedicationRequest": (Medication, medication_request_resource),
    "AllergyIntolerance": (Allergy, allergy_resource),
    "Observation": (LabResult, observation_resource),
    "DocumentReference": (VisitNote, document_reference_resource),
}


def resources_of(patient: Patient, resource_type: str) -> list[dict]:
    """Every resource of one type in a chart (``service.read_chart``), in the chart's order."""
    if resource_type == "Patient":
        return [patient_resource(patient)]
    rows = {"Condition": patient.conditions, "MedicationRequest": patient.medications,
            "AllergyIntolerance": patient.allergies, "Observation": patient.results,
            "DocumentReference": patient.notes}[resource_type]
    mapping = MAPPINGS[resource_type][1]
    return [mapping(row) for row in rows]


def chart_bundle(patient: Patient) -> dict:
    """The whole chart: Patient, Condition, MedicationRequest, AllergyIntolerance, Observation, DocumentReference."""
    resources = [resource for resource_type in MAPPINGS for resource in resources_of(patient, resource_type)]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(datetime.now(timezone.utc)),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
