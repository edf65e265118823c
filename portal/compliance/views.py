"""Compliance console pages and its JSON API. Thin: parse, authorize (decide + audit), call the services.

Every page reads the audit log only after ``authorize`` for an audit.* action has decided and
recorded the access; searches and exports record what they returned (filter and count).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, stream_with_context, url_for
from flask_login import current_user, login_required

from audit import AuditFilter
from portal.access import authorize, authorized
from portal.actions import Action
from portal.auditlog import verify_key
from portal.auth import step_up
from portal.compliance import charts, exports, flags, integrity, search, verification
from portal.compliance.filters import (
    FILTER_FIELDS,
    filter_query_args,
    parse_cursor,
    parse_filter,
    parse_whole_number,
)
from portal.errors import status_of
from portal.exceptions import FilterError, NotFound
from portal.witnessing import status as witness_status

bp = Blueprint("compliance", __name__)

T = TypeVar("T")


def _requested(action: Action, parse: Callable[[], T], **refused_details) -> T:
    """What ``parse`` reads from the request; malformed input is audited as a refused-by-input request and
    raised (400)."""
    try:
        return parse()
    except FilterError:
        authorize(action, details={**refused_details, "valid": False})
        raise


def _requested_filter(action: Action, fields: tuple[str, ...] = FILTER_FIELDS, **refused_details) -> AuditFilter:
    return _requested(action, lambda: parse_filter({name: request.args.get(name) for name in fields}),
                      **refused_details)


def _requested_cursor(action: Action) -> int | None:
    return _requested(action, lambda: parse_cursor(request.args.get("before")))


def _searched_page(audit_filter: AuditFilter, before: int | None) -> search.SearchPage:
    return authorized(
        Action.AUDIT_SEARCH,
        lambda: search.search(audit_filter, before),
        lambda result: search.search_details(audit_filter, result, before),
        refused_details=search.search_details(audit_filter, before=before),
    )


# --------------------------------------------------------------------------- search


@bp.get("/")
@login_required
def console():
    try:
        audit_filter = _requested_filter(Action.AUDIT_SEARCH)
        before = _requested_cursor(Action.AUDIT_SEARCH)
    except FilterError as exc:
        return render_template("compliance/console.html", error=exc.message, form=request.args, page=None,
                               charts=None), status_of(exc)
    page = _searched_page(audit_filter, before)
    through = audit_filter.through if audit_filter.through is not None else search.head_seq()
    query = filter_query_args(audit_filter)
    return render_template(
        "compliance/console.html", error=None, form=_form_values(audit_filter), page=page, before=before,
        charts=charts.charts(audit_filter), through=through, query=query,
        export_query={**query, "through": str(through)},
    )


def _form_values(audit_filter: AuditFilter) -> dict[str, str]:
    """The form as submitted, with times in the shape a datetime-local control accepts."""
    values = {name: request.args.get(name, "") for name in FILTER_FIELDS}
    for name, moment in (("since", audit_filter.since), ("until", audit_filter.until)):
        values[name] = moment.strftime("%Y-%m-%dT%H:%M:%S") if moment else ""
    return values


@bp.get("/api/events")
@login_required
def api_events():
    audit_filter = _requested_filter(Action.AUDIT_SEARCH)
    page = _searched_page(audit_filter, _requested_cursor(Action.AUDIT_SEARCH))
    return jsonify(events=[row.to_json() for row in page.rows], total=page.total, next_before=page.next_before)


@bp.get("/events/<int:seq>")
@login_required
def event(seq: int):
    authorize(Action.AUDIT_READ, details={"seq": seq})
    detail = search.event_detail(seq)
    if detail is None:
        raise NotFound("not_found", f"There is no audit entry with sequence number {seq}.")
    return render_template("compliance/event.html", detail=detail)


# --------------------------------------------------------------------------- flags


@bp.get("/flags", endpoint="flags")
@login_required
def flags_page():
    try:
        audit_filter = _requested_filter(Action.AUDIT_SEARCH, ("since", "until"), view="flags")
    except FilterError as exc:
        return render_template("compliance/flags.html", error=exc.message, form=request.args,
                               flags=None), status_of(exc)
    found = authorized(
        Action.AUDIT_SEARCH,
        lambda: flags.flags(audit_filter),
        lambda result: {"view": "flags", "filter": audit_filter.describe()[:256], **result.counts()},
        refused_details={"view": "flags"},
    )
    return render_template("compliance/flags.html", error=None, form=_form_values(audit_filter), flags=found,
                           rules=_flag_rules(), range_args=filter_query_args(audit_filter))


def _flag_rules() -> dict[str, object]:
    return {"start": flags.WORKDAY_START.strftime("%H:%M"), "end": flags.WORKDAY_END.strftime("%H:%M"),
            "patients": flags.BULK_READ_PATIENTS, "minutes": int(flags.BULK_READ_WINDOW.total_seconds() // 60)}


@bp.post("/flags/break-glass/<grant_id>/review")
@login_required
def review_break_glass(grant_id: str):
    grant_id = grant_id.strip()[:64]
    grant = flags.break_glass_grant(grant_id)
    authorize(Action.AUDIT_REVIEW, grant, details={"break_glass": grant_id})
    if grant is None:
        raise NotFound("not_found", "There is no such break-glass access.")
    already = grant.reviewed_at is not None
    flags.review_break_glass(grant_id, current_user.id)
    flash("That emergency access was already reviewed." if already else "Emergency access marked as reviewed.",
          "info" if already else "success")
    return redirect(url_for("compliance.flags", **{k: v for k, v in request.args.items() if k in ("since", "until")}))


# --------------------------------------------------------------------------- integrity


@bp.get("/integrity", endpoint="integrity")
@login_required
def integrity_page():
    authorize(Action.AUDIT_READ, details={"view": "integrity"})
    return render_template("compliance/integrity.html", last=integrity.last_verification(), key=verify_key(),
                           log=integrity.tree_status(), witness=witness_status())


@bp.get("/integrity/public-key.pem")
@login_required
def public_key():
    """The key auditors pin with `python -m audit verify FILE --public-key audit-public-key.pem`."""
    authorize(Action.AUDIT_READ, details={"view": "public_key"})
    return Response(verify_key().to_pem(), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="audit-public-key.pem"'})


@bp.post("/integrity/verify")
@login_required
def verify_now():
    """Incremental from the last verified checkpoint, or ``mode=full`` (the page's "Full verification")."""
    full = request.form.get("mode") == "full"
    report = authorized(Action.AUDIT_VERIFY, lambda: verification.verify(verification.plan(full)),
                        lambda result: result.details())
    flash("Verification finished: " + report.summary(), "success" if report.ok and not report.witness_error else "error")
    return redirect(url_for("compliance.integrity"))


@bp.get("/api/proofs/inclusion")
@login_required
def api_inclusion_proof():
    """An entry's inclusion proof for an auditor to check offline (``python -m audit check-inclusion``)."""
    return jsonify(integrity.inclusion_proof(*_audited_proof_request("inclusion", "index", "size")))


@bp.get("/api/proofs/consistency")
@login_required
def api_consistency_proof():
    """That the log of ``old`` entries is a prefix of the log of ``new`` (``python -m audit check-consistency``)."""
    return jsonify(integrity.consistency_proof(*_audited_proof_request("consistency", "old", "new")))


def _audited_proof_request(proof: str, required: str, optional: str) -> tuple[int, int | None]:
    """The two whole numbers a proof is asked for with, the request audited (malformed ones as a 400)."""
    def parse() -> tuple[int, int | None]:
        first, second = (parse_whole_number(request.args.get(name), name) for name in (required, optional))
        if first is None:
            raise FilterError(f"'{required}' is required: a whole number.")
        return first, second

    first, second = _requested(Action.AUDIT_READ, parse, proof=proof)
    authorize(Action.AUDIT_READ, details={"proof": proof, required: first, optional: second})
    return first, second


# --------------------------------------------------------------------------- exports


def _prepared_export(destination: str) -> exports.PreparedExport:
    audit_filter = _requested_filter(Action.AUDIT_EXPORT)
    try:
        fmt = exports.check_format(request.args.get("format"))
    except FilterError:
        authorize(Action.AUDIT_EXPORT, details={"valid": False})
        raise

    def prepare() -> tuple[step_up.StepUp, exports.PreparedExport]:
        # Only once the policy allows it: a fresh sign-in is asked of compliance officers, not of anyone.
        proof = step_up.require(step_up.Sensitive.AUDIT_EXPORT, request.full_path)
        return proof, exports.prepare_export(audit_filter, fmt)

    proof, prepared = authorized(
        Action.AUDIT_EXPORT,
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
