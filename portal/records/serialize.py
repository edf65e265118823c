"""Chart sections as plain JSON for the API (the FHIR form lives in fhir.py)."""
from __future__ import annotations

from portal.models import Patient


def _time(value) -> str | None:
    return value.isoformat() if value else None


def demographics(p: Patient) -> dict:
    return {"id": p.id, "mrn": p.mrn, "given_name": p.given_name, "family_name": p.family_name,
            "birth_date": p.birth_date.isoformat(), "sex": p.sex, "phone": p.phone, "email": p.email, "address": p.address}


def search_result(p: Patient) -> dict:
    """What a search lists: enough to pick the right person, no contact details."""
    return {"id": p.id, "mrn": p.mrn, "given_name": p.given_name, "family_name": p.family_name,
            "birth_date": p.birth_date.isoformat()}


SECTION_SERIALIZERS = {
    "demographics": demographics,
    "problems": lambda p: [{"id": c.id, "text": c.text, "status": c.status, "onset": _time(c.onset)} for c in p.conditions],
    "medications": lambda p: [{"id": m.id, "text": m.text, "dosage": m.dosage, "status": m.status} for m in p.medications],
    "allergies": lambda p: [{"id": a.id, "substance": a.substance, "reaction": a.reaction, "severity": a.severity}
                            for a in p.allergies],
    "results": lambda p: [result(r) for r in p.results],
    "notes": lambda p: [note(n) for n in p.notes],
}


def result(r) -> dict:
    return {"id": r.id, "name": r.name, "value": r.value, "unit": r.unit, "reference_range": r.reference_range,
            "flag": r.flag, "abnormal": r.abnormal, "observed_at": _time(r.observed_at)}


def note(n) -> dict:
    return {"id": n.id, "title": n.title, "text": n.text, "author": n.author.display_name if n.author else None,
            "created_at": _time(n.created_at)}


def chart(p: Patient, sections=tuple(SECTION_SERIALIZERS)) -> dict:
    return {section: SECTION_SERIALIZERS[section](p) for section in sections}
