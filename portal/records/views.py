"""HTML pages: the patient's own chart, the clinician's lists, search, chart, notes and break-glass."""
from __future__ import annotations

import json
import uuid

from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from portal import policy, services
from portal.access import authorize, record
from portal.actions import CHART_SECTIONS, Action, Section
from portal.auth import step_up
from portal.errors import status_of
from portal.exceptions import InvalidInput, SearchLimitReached
from portal.extensions import limiter
from portal.people import own_patient_id
from portal.policy import ChartRef
from portal.records import fhir, service
from portal.records.blueprint import bp
from portal.records.search import SEARCH_RATE_LIMIT, listed_by_search
from portal.validation import parse_id

ALL_SECTIONS = ",".join(CHART_SECTIONS)


def _render_chart(patient_id: str, template: str = "records/chart.html"):
    decision = authorize(Action.CHART_READ, ChartRef(patient_id, Section.CHART), details={"sections": ALL_SECTIONS})
    patient = service.read_chart(patient_id)
    return render_template(template, patient=patient, break_glass=bool(decision.break_glass_id),
                           note_submission=str(uuid.uuid4()))


@bp.get("/chart")
@login_required
def my_chart():
    return _render_chart(own_patient_id(current_user))


@bp.get("/chart/results/<result_id>")
@login_required
def my_result(result_id: str):
    patient_id = own_patient_id(current_user)
    authorize(Action.CHART_READ, ChartRef(patient_id, Section.RESULTS),
              details={"result": parse_id(result_id, "result id")})
    return render_template("records/result.html", patient=service.get_patient(patient_id),
                           result=service.get_result(patient_id, result_id))


@bp.get("/chart/fhir")
@login_required
def my_fhir():
    return fhir_download(own_patient_id(current_user))


@bp.get("/chart/access-log")
@login_required
def my_access_log():
    patient_id = own_patient_id(current_user)
    authorize(Action.CHART_ACCESS_LOG, ChartRef(patient_id, Section.ACCESS_LOG))
    return render_template("records/access_log.html", entries=service.chart_access_log(patient_id))


@bp.get("/clinician")
@login_required
def clinician_home():
    authorize(Action.PATIENT_LIST)
    return render_template("records/clinician_home.html", teams=service.care_team_patients(current_user))


@bp.get("/patients/search")
@login_required
@limiter.limit(SEARCH_RATE_LIMIT)
def search():
    mrn, name, dob = (request.args.get(k, "") for k in ("mrn", "name", "birth_date"))
    if not (mrn or name or dob):
        authorize(Action.PATIENT_SEARCH, details={"submitted": False})
        return render_template("records/search.html", results=None, query=request.args)
    try:
        results = listed_by_search(mrn, name, dob)
    except (InvalidInput, SearchLimitReached) as exc:
        return render_template("records/search.html", results=None, query=request.args,
                               error=exc.message), status_of(exc)
    return render_template("records/search.html", results=results, query=request.args)


@bp.get("/patients/<patient_id>")
@login_required
def chart(patient_id: str):
    return _render_chart(parse_id(patient_id))


@bp.get("/patients/<patient_id>/fhir")
@login_required
def chart_fhir(patient_id: str):
    return fhir_download(parse_id(patient_id))


@bp.post("/patients/<patient_id>/notes")
@login_required
def add_note(patient_id: str):
    patient_id = parse_id(patient_id)
    _, created = service.write_note(patient_id, current_user, request.form.get("title", ""),
                                    request.form.get("text", ""), request.form.get("submission_id"))
    if created:
        flash("Note saved.", "success")
    else:
        flash("That note was already saved.", "info")
    return redirect(url_for("records.chart", patient_id=patient_id) + "#notes")


@bp.get("/patients/<patient_id>/break-glass")
@login_required
def break_glass_form(patient_id: str):
    """Where a clinician confirms emergency access after signing in again. It shows nothing of the
    chart, so only a refusal is audited: a link alone must not put a break-glass attempt on record."""
    patient_id = parse_id(patient_id)
    if not policy.can(current_user, Action.BREAK_GLASS_OPEN).allowed:
        authorize(Action.BREAK_GLASS_OPEN, details={"stage": "form"})
    return render_template("records/break_glass.html", patient_id=patient_id,
                           proof=step_up.current(step_up.Sensitive.BREAK_GLASS, resource=patient_id),
                           reason=step_up.pending(step_up.Sensitive.BREAK_GLASS, resource=patient_id).get("reason", ""),
                           minutes=services.settings().break_glass_minutes)


@bp.post("/patients/<patient_id>/break-glass")
@login_required
def break_glass(patient_id: str):
    """Emergency access needs a typed reason and a fresh sign-in for this patient, spent by this one grant."""
    patient_id = parse_id(patient_id)
    proof = step_up.current(step_up.Sensitive.BREAK_GLASS, resource=patient_id)
    authorize(Action.BREAK_GLASS_OPEN, ChartRef(patient_id, Section.BREAK_GLASS), details=step_up.details(proof))
    reason = service.checked_break_glass_reason(request.form.get("reason"))
    confirm_url = url_for("records.break_glass_form", patient_id=patient_id)
    if proof is None or not step_up.consume(step_up.Sensitive.BREAK_GLASS):
        step_up.ask(step_up.Sensitive.BREAK_GLASS, confirm_url, pending={"reason": reason}, resource=patient_id)
    minutes = services.settings().break_glass_minutes
    grant = service.open_break_glass(current_user, service.get_patient(patient_id), reason, minutes)
    record(Action.BREAK_GLASS_GRANTED, "allowed", patient_id=patient_id, resource_type=Section.BREAK_GLASS,
           resource_id=grant.id, reason="emergency access with typed reason",
           details={"break_glass": grant.id, **proof.audit_details()})
    flash(f"Emergency access granted for {minutes} minutes. This access is flagged for compliance review.", "warning")
    return redirect(url_for("records.chart", patient_id=patient_id))


def fhir_download(patient_id: str) -> Response:
    """The whole chart as a FHIR R4 Bundle download (page and API alike)."""
    authorize(Action.CHART_EXPORT, ChartRef(patient_id, Section.FHIR_BUNDLE))
    bundle = fhir.chart_bundle(service.read_chart(patient_id))
    return Response(json.dumps(bundle, indent=2), mimetype="application/fhir+json",
                    headers={"Content-Disposition": f'attachment; filename="chart-{patient_id}.fhir.json"'})
