"""The accounting of disclosures as pages, CSV and PDF downloads and JSON. Thin: parse, authorize, call the service.

The decision is checked before any work and a refusal is audited by ``authorize``; an issued report
is audited (with its period, format, line count and tree size) once every line's entry is proven to be
in the signed tree, and before any PHI is decrypted. An entry that fails its proof is recorded as an
error and no report is issued. ``format=json`` downloads the report with its proofs.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from flask_login import current_user, login_required

from portal import policy, services
from portal.access import authorize, authorized, record
from portal.actions import Action, Section
from portal.disclosures import service
from portal.disclosures.pdf import report_pdf
from portal.disclosures.service import DateRange, DisclosureReport
from portal.errors import status_of
from portal.errors.handlers import audit_refusal
from portal.exceptions import AccessDenied, Conflict, DateRangeError, InvalidInput, UnverifiedLog
from portal.extensions import limiter
from portal.people import own_patient_id
from portal.policy import ChartRef
from portal.records.search import listed_within_limit
from portal.validation import parse_id

bp = Blueprint("disclosures", __name__)

log = logging.getLogger(__name__)

FORMATS = ("html", "csv", "pdf", "json")
# One bucket per person for all the ways of asking for a report (each may sign and witness a checkpoint).
per_person = limiter.shared_limit(lambda: services.settings().report_rate_limit, scope="disclosures",
                                  key_func=lambda: f"user:{current_user.get_id()}")
# --------------------------------------------------------------------------- pages


@bp.get("/me/disclosures")
@login_required
@per_person
def mine():
    patient_id = own_patient_id(current_user)
    try:
        period = _period()
    except DateRangeError as exc:
        return _bad_range("disclosures/patient.html", exc)
    fmt = _format()
    report = _issued(patient_id, period, fmt)
    return _respond(report, fmt, "disclosures/patient.html", query=_range_query(period))


@bp.get("/compliance/disclosures")
@login_required
@per_person
def compliance():
    mrn, patient = (request.args.get(name, "").strip() for name in ("mrn", "patient"))
    if not (mrn or patient):
        authorize(Action.AUDIT_READ, details={"view": "disclosures"})
        period = service.parse_range(None, None)
        return render_template("disclosures/compliance.html", report=None, error=None, form=_range_query(period),
                               today=_today())
    try:
        period = _period()
    except DateRangeError as exc:
        return _bad_range("disclosures/compliance.html", exc)
    fmt = _format()
    patient_id = parse_id(patient) if patient else _patient_by_mrn(mrn, period, fmt)
    report = _issued(patient_id, period, fmt, lookup="patient id" if patient else "mrn")
    query = {"patient": patient_id, **_range_query(period)}
    return _respond(report, fmt, "disclosures/compliance.html", query=query,
                    form={"mrn": mrn, "patient": patient, **_range_query(period)})


@bp.get("/api/v1/patients/<patient_id>/disclosures")
@login_required
@per_person
def api_report(patient_id: str):
    patient_id = parse_id(patient_id)
    return jsonify(service.signed_json(_issued(patient_id, _period(), "json")))


# --------------------------------------------------------------------------- helpers


def _issued(patient_id: str, period: DateRange, fmt: str, **extra: str) -> DisclosureReport:
    """Refuse (audited) before any work; audit the issue once every line is proven, before PHI is decrypted."""
    details: dict[str, Any] = {"range": period.describe(), "format": fmt, **extra}
    try:
        proven = authorized(Action.CHART_DISCLOSURES, lambda: service.proven_log(patient_id, period),
                            lambda log: {**details, "lines": log.count, "tree_size": log.proof.tree_size,
                                         "witnessed": bool(log.proof.witness_keys)},
                            resource=ChartRef(patient_id, Section.DISCLOSURES), refused_details=details)
    except UnverifiedLog as exc:
        record(Action.CHART_DISCLOSURES, "error", reason="audit entry failed its proof", patient_id=patient_id,
               resource_type=Section.DISCLOSURES, resource_id=patient_id, details={**details, **exc.audit_details()})
        log.error("disclosure report refused: an audit entry failed its inclusion proof",
                  extra={"error": f"{exc.kind} at entry {exc.position}"})
        exc.audited = True
        raise
    return service.report(proven)  # PHI (name, MRN, break-glass reasons) is decrypted only now


def _patient_by_mrn(mrn: str, period: DateRange, fmt: str) -> str:
    """The patient with this MRN, found through the blind index; no match is refused like an unknown id.

    Only compliance officers look patients up by MRN: anyone else is refused as for an unknown MRN,
    before any lookup, so the answer says nothing about which MRNs exist. A lookup is a search: audited
    as one, and within the officer's hourly limit of distinct patients.
    """
    found = listed_within_limit(mrn=mrn) if policy.can(current_user, Action.AUDIT_READ).allowed else []
    if len(found) > 1:
        raise Conflict("ambiguous_mrn", "More than one patient has that MRN; enter the patient id instead.")
    if found:
        return found[0].id
    decision = policy.deny("no such patient", conceal=True)
    record(Action.CHART_DISCLOSURES, decision.outcome, reason=decision.reason, resource_type=Section.DISCLOSURES,
           details={"range": period.describe(), "format": fmt, "lookup": "mrn"})
    raise AccessDenied(Action.CHART_DISCLOSURES, decision.reason, conceal=True)


def _respond(report: DisclosureReport, fmt: str, template: str, query: dict[str, str],
             form: dict[str, str] | None = None):
    """The page, or a download; ``query`` is what the download links carry."""
    if fmt == "csv":
        return _download(report, report.csv.encode("utf-8"), "text/csv; charset=utf-8", "csv")
    if fmt == "pdf":
        return _download(report, report_pdf(report), "application/pdf", "pdf")
    if fmt == "json":  # the proof file beside the CSV and PDF: `python -m audit verify-report` checks it
        body = json.dumps(service.signed_json(report), ensure_ascii=False, indent=1).encode("utf-8")
        return _download(report, body, "application/json", "json")
    return render_template(template, report=report, error=None, form=form or query, query=query, today=_today())


def _download(report: DisclosureReport, body: bytes, content_type: str, extension: str) -> Response:
    return Response(body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{report.filename_stem}.{extension}"',
        "X-Audit-Tree-Size": str(report.proof.tree_size),
        "X-Audit-Tree-Root": report.root_text,
        "X-Report-Digest": report.digest,
        "X-Report-Lines": str(report.count),
    })


def _period() -> DateRange:
    return service.parse_range(request.args.get("start"), request.args.get("end"))


def _format() -> str:
    fmt = request.args.get("format") or "html"
    if fmt not in FORMATS:
        raise InvalidInput("bad_format", "The format must be csv, pdf or json, or left out for the page.")
    return fmt


def _range_query(period: DateRange) -> dict[str, str]:
    return {"start": period.start.isoformat(), "end": period.end.isoformat()}


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _bad_range(template: str, refusal: DateRangeError):
    """A malformed range is refused like any bad request: audited without its values, the form shown again."""
    audit_refusal(refusal)
    form = {name: request.args.get(name, "") for name in ("mrn", "patient", "start", "end")}
    return render_template(template, report=None, error=refusal.message, form=form,
                           today=_today()), status_of(refusal)
