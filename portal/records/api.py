"""JSON API under /api/v1/: the same data as the pages, with the standard error body."""
from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user, login_required

from portal.access import authorize
from portal.actions import CHART_SECTIONS, Action, Section
from portal.exceptions import InvalidInput, NotFound
from portal.extensions import limiter
from portal.people import own_patient_id
from portal.policy import ChartRef
from portal.records import serialize, service
from portal.records.blueprint import bp
from portal.records.search import SEARCH_RATE_LIMIT, listed_by_search
from portal.records.views import fhir_download
from portal.validation import json_object, parse_id


@bp.get("/api/v1/me")
@login_required
def api_me():
    return jsonify(id=current_user.id, name=current_user.display_name, roles=sorted(current_user.role_set),
                   patient_id=current_user.patient_id)


@bp.get("/api/v1/me/chart")
@login_required
def api_my_chart():
    return _chart_json(own_patient_id(current_user))


@bp.get("/api/v1/patients")
@login_required
@limiter.limit(SEARCH_RATE_LIMIT)
def api_search():
    results = listed_by_search(*(request.args.get(k, "") for k in ("mrn", "name", "birth_date")))
    return jsonify(patients=[serialize.search_result(p) for p in results])


@bp.get("/api/v1/patients/<patient_id>")
@login_required
def api_chart(patient_id: str):
    return _chart_json(parse_id(patient_id))


@bp.get("/api/v1/patients/<patient_id>/<section>")
@login_required
def api_section(patient_id: str, section: str):
    patient_id = parse_id(patient_id)
    if section == "fhir":
        return fhir_download(patient_id)
    if section not in CHART_SECTIONS:
        raise NotFound("unknown_section", f"Sections are: {', '.join(CHART_SECTIONS)}.")
    authorize(Action.CHART_READ, ChartRef(patient_id, Section(section)))
    return jsonify({section: serialize.SECTION_SERIALIZERS[section](service.read_chart(patient_id))})


@bp.post("/api/v1/patients/<patient_id>/notes")
@login_required
def api_add_note(patient_id: str):
    patient_id = parse_id(patient_id)
    body = json_object()
    title, text, submission_id = body.get("title", ""), body.get("text", ""), body.get("submission_id")
    if not (isinstance(title, str) and isinstance(text, str) and isinstance(submission_id, str | None)):
        raise InvalidInput("bad_json", "title, text and submission_id are text.")
    note, created = service.write_note(patient_id, current_user, title, text, submission_id)
    return jsonify(note=serialize.note(note), created=created), 201 if created else 200


def _chart_json(patient_id: str):
    authorize(Action.CHART_READ, ChartRef(patient_id, Section.CHART), details={"sections": ",".join(CHART_SECTIONS)})
    return jsonify(serialize.chart(service.read_chart(patient_id)))
