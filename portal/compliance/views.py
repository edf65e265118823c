"""Compliance console pages and its JSON API. Thin: parse, authorize (decide + audit), call the service.

Every page reads the audit log only after ``authorize`` for an audit.* action has decided and
recorded the access; searches and exports record what they returned (filter and count).
"""
from __future__ import annotations

from functools import wraps

from flask import (
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required

from audit import AuditFilter
from portal.access import AccessDenied, AuditUnavailable, authorize, authorized
from portal.auth import step_up
from portal.compliance import bp, service
from portal.compliance.service import FilterError, filter_query_args
from portal.errors import ApiError, error_response

FILTER_FIELDS = ("actor", "patient", "action", "outcome", "since", "until", "through")


def _is_api() -> bool:
    return request.path.startswith(url_for("compliance.console") + "api/")


def _api_error(status: int, code: str, message: str):
    return jsonify(error={"code": code, "message": message}), status


@bp.errorhandler(ApiError)
def _on_api_error(exc: ApiError):
    return _api_error(exc.status, exc.code, exc.message) if _is_api() else error_response(exc.status, exc.code,
                                                                                             exc.message)


@bp.errorhandler(AccessDenied)
def _on_denied(exc: AccessDenied):
    message = f"Access refused: {exc.decision.reason}."
    return _api_error(403, "forbidden", message) if _is_api() else error_response(403, "forbidden", message)


@bp.errorhandler(AuditUnavailable)
def _on_audit_unavailable(_exc: AuditUnavailable):
    message = "The audit log cannot be written right now, so it is not being served. Try again shortly."
    return _api_error(503, "audit_unavailable", message) if _is_api() else error_response(
        503, "audit_unavailable", message)


def api_login_required(view):
    """JSON callers get 401 with the standard error body instead of a redirect to the sign-in page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return _api_error(401, "unauthenticated", "Sign in first.")
        return view(*args, **kwargs)

    return wrapper


def _filter_or_error(action: str) -> AuditFilter:
    """The request's filter; a malformed one is audited as a refused-by-input search and raised as 400."""
    try:
        return service.parse_filter({name: request.args.get(name) for name in FILTER_FIELDS})
    except FilterError as exc:
        authorize(action, details={"valid": False})
        raise ApiError(400, "bad_filter", str(exc)) from None


def _cursor() -> int | None:
    try:
        return service.parse_cursor(request.args.get("before"))
    except FilterError as exc:
        raise ApiError(400, "bad_filter", str(exc)) from None


# --------------------------------------------------------------------------- search


@bp.get("/")
@login_required
def console():
    try:
        audit_filter = service.parse_filter({name: request.args.get(name) for name in FILTER_FIELDS})
        before = service.parse_cursor(request.args.get("before"))
    except FilterError as exc:
        authorize("audit.search", details={"valid": False})
        return render_template("compliance/console.html", error=str(exc), form=request.args, page=None,
                               charts=None), 400
    page = authorized(
        "audit.search",
        lambda: service.search(audit_filter, before),
        lambda result: service.search_details(audit_filter, result, before),
        refused_details=service.search_details(audit_filter, before=before),
    )
    through = audit_filter.through if audit_filter.through is not None else service.head_seq()
    query = filter_query_args(audit_filter)
    return render_template(
        "compliance/console.html", error=None, form=_form_values(audit_filter), page=page, before=before,
        charts=service.charts(audit_filter), through=through, query=query,
        export_query={**query, "through": str(through)},
    )


def _form_values(audit_filter: AuditFilter) -> dict[str, str]:
    """The form as submitted, with times in the shape a datetime-local control accepts."""
    values = {name: request.args.get(name, "") for name in FILTER_FIELDS}
    for name, moment in (("since", audit_filter.since), ("until", audit_filter.until)):
        values[name] = moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else ""
    return values


@bp.get("/api/events")
@api_login_required
def api_events():
    audit_filter = _filter_or_error("audit.search")
    before = _cursor()
    page = authorized(
        "audit.search",
        lambda: service.search(audit_filter, before),
        lambda result: service.search_details(audit_filter, result, before),
        refused_details=service.search_details(audit_filter, before=before),
    )
    return jsonify(events=[row.to_json() for row in page.rows], total=page.total, next_before=page.next_before)


@bp.get("/events/<int:seq>")
@login_required
def event(seq: int):
    authorize("audit.read", details={"seq": seq})
    detail = service.event_detail(seq)
    if detail is None:
        raise ApiError(404, "not_found", f"There is no audit entry with sequence number {seq}.")
    return render_template("compliance/event.html", detail=detail)


# --------------------------------------------------------------------------- flags


@bp.get("/flags")
@login_required
def flags():
    try:
        audit_filter = service.parse_filter({name: request.args.get(name) for name in ("since", "until")})
    except FilterError as exc:
        authorize("audit.search", details={"view": "flags", "valid": False})
        return render_template("compliance/flags.html", error=str(exc), form=request.args, flags=None), 400
    found = authorized(
        "audit.search",
        lambda: service.flags(audit_filter),
        lambda result: {"view": "flags", "filter": audit_filter.describe()[:256], **result.counts()},
        refused_details={"view": "flags"},
    )
    return render_template("compliance/flags.html", error=None, form=_form_values(audit_filter), flags=found,
                           rules=_flag_rules(), range_args=filter_query_args(audit_filter))


def _flag_rules() -> dict[str, object]:
    return {"start": service.WORKDAY_START.strftime("%H:%M"), "end": service.WORKDAY_END.strftime("%H:%M"),
            "patients": service.BULK_READ_PATIENTS,
            "minutes": int(service.BULK_READ_WINDOW.total_seconds() // 60)}


@bp.post("/flags/break-glass/<grant_id>/review")
@login_required
def review_break_glass(grant_id: str):
    grant_id = grant_id.strip()[:64]
    grant = service.break_glass_grant(grant_id)
    authorize("audit.review", grant, details={"break_glass": grant_id})
    if grant is None:
        raise ApiError(404, "not_found", "There is no such break-glass access.")
    already = grant.reviewed_at is not None
    service.review_break_glass(grant_id, current_user.id)
    flash("That emergency access was already reviewed." if already else "Emergency access marked as reviewed.",
          "info" if already else "success")
    return redirect(url_for("compliance.flags", **{k: v for k, v in request.args.items() if k in ("since", "until")}))


# --------------------------------------------------------------------------- integrity


@bp.get("/integrity")
@login_required
def integrity():
    authorize("audit.read", details={"view": "integrity"})
    return render_template("compliance/integrity.html", last=service.last_verification(), key=service.verify_key())


@bp.get("/integrity/public-key.pem")
@login_required
def public_key():
    """The key auditors pin with `python -m audit verify FILE --public-key audit-public-key.pem`."""
    authorize("audit.read", details={"view": "public_key"})
    return Response(service.verify_key().to_pem(), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="audit-public-key.pem"'})


@bp.post("/integrity/verify")
@login_required
def verify_now():
    report = authorized("audit.verify", service.verify_log, service.verification_details)
    flash("Verification finished: " + report.summary(), "success" if report.ok else "error")
    return redirect(url_for("compliance.integrity"))


# --------------------------------------------------------------------------- exports


def _prepared_export(destination: str) -> service.PreparedExport:
    audit_filter = _filter_or_error("audit.export")
    try:
        fmt = service.check_format(request.args.get("format"))
    except FilterError as exc:
        authorize("audit.export", details={"valid": False})
        raise ApiError(400, "bad_format", str(exc)) from None

    def prepare() -> tuple[step_up.StepUp, service.PreparedExport]:
        # Only once the policy allows it: a fresh sign-in is asked of compliance officers, not of anyone.
        proof = step_up.require("audit_export", request.full_path)
        return proof, service.prepare_export(audit_filter, fmt)

    proof, prepared = authorized(
        "audit.export",
        prepare,
        lambda result: {**result[1].audit_details(destination), **result[0].audit_details()},
        refused_details={"format": fmt, "filter": audit_filter.describe()[:256], "destination": destination},
    )
    return prepared


@bp.get("/export")
@login_required
def export():
    """Stream the filtered log. Audited (with its count) before the first byte is sent."""
    prepared = _prepared_export("download")
    headers = {
        "Content-Disposition": f'attachment; filename="{prepared.filename}"',
        "X-Audit-Manifest": prepared.manifest_header(),
        "X-Audit-Count": str(prepared.count),
        "X-Audit-Through": str(prepared.filter.through),
    }
    return Response(stream_with_context(prepared.chunks()), mimetype=prepared.mimetype, headers=headers)


@bp.get("/export/manifest")
@login_required
def export_manifest():
    """The signed manifest of the export with the same filter, format and ``through`` bound."""
    prepared = _prepared_export("manifest")
    return Response(prepared.manifest_json(), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{prepared.filename}.manifest.json"'})
