"""The handlers: each domain error, database outage, decryption failure and HTTP error, answered once."""
from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from flask import Response, g, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.access import record
from portal.actions import Action
from portal.crypto import DecryptionError
from portal.db import end_session
from portal.errors import bp
from portal.exceptions import (
    AccessDenied,
    AuditUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    LimitReached,
    NotFound,
    PortalError,
    Unauthenticated,
)
from portal.extensions import login_manager
from portal.observability import DECRYPT_FAILURES
from portal.request_fields import is_fhir_request, wants_json

log = logging.getLogger(__name__)

TITLES = {
    400: "That request could not be understood",
    401: "Please sign in",
    403: "You do not have access to this",
    404: "Not found",
    405: "Not allowed",
    409: "That cannot be done right now",
    413: "That is too large",
    429: "Too many attempts",
    500: "Something went wrong",
    502: "The sign-in provider could not be reached",
    503: "Temporarily unavailable",
}
# Refusals that are no one's fault get a title that says what is going on rather than "no access".
CODE_TITLES = {"no_chart": "Your account is not linked to a chart yet"}
STATUS = {InvalidInput: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, LimitReached: 429,
          AuditUnavailable: 503}
BREAK_GLASS_ACTIONS = frozenset({Action.CHART_READ, Action.CHART_WRITE})
# FHIR's issue type for each status of an OperationOutcome (http://hl7.org/fhir/issue-type).
ISSUE_TYPES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 409: "conflict",
               413: "too-costly", 429: "throttled", 502: "transient", 503: "transient"}
FHIR_REALM = "fhir"


def status_of(exc: PortalError) -> int:
    """The HTTP status of a domain error: its nearest class in STATUS."""
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 400)


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **context):
    """An OperationOutcome under the FHIR base, the JSON error body for API callers, the error page for browsers."""
    if is_fhir_request():
        return operation_outcome(status, code, message), status, headers or {}
    if wants_json():
        return jsonify(error={"code": code, "message": message}), status
    title = CODE_TITLES.get(code) or TITLES.get(status, "Error")
    return render_template("errors/error.html", status=status, title=title, message=message, code=code, **context), status


def operation_outcome(status: int, code: str, message: str) -> Response:
    """The FHIR R4 answer to an error: one issue, its type from the status, the portal's code as diagnostics."""
    body = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": ISSUE_TYPES.get(status, "exception"), "details": {"text": message},
        "diagnostics": code}]}
    return Response(json.dumps(body), mimetype="application/fhir+json")


def bearer_challenge(error: str | None, description: str = "") -> dict[str, str]:
    """RFC 6750's WWW-Authenticate header: the realm alone when no token was sent, else the error and why."""
    challenge = f'Bearer realm="{FHIR_REALM}"'
    if error:
        challenge += f', error="{error}"'
        if description:
            challenge += ', error_description="{}"'.format(description.replace('"', "'").replace("\\", "/"))
    return {"WWW-Authenticate": challenge}


def audit_refusal(exc: PortalError) -> None:
    """A signed-in user's malformed or unknown request is an access attempt: record it, with no input values."""
    if exc.audited or not current_user.is_authenticated:
        return
    route = request.url_rule.rule if request.url_rule else "unmatched"
    try:
        record(Action.REQUEST_REFUSED, "denied", reason=exc.code, details={"route": route, "status": status_of(exc)})
    except AuditUnavailable:
        log.error("could not audit a refused request", extra={"error": exc.code})


@bp.app_errorhandler(PortalError)
def _refused(exc: PortalError):
    audit_refusal(exc)
    return error_response(status_of(exc), exc.code, exc.message)


@bp.app_errorhandler(Unauthenticated)
def _unauthenticated(exc: Unauthenticated):
    audit_refusal(exc)
    return error_response(401, exc.code, exc.message, headers=bearer_challenge(exc.token_error, exc.message))


@bp.app_errorhandler(AccessDenied)
def _access_denied(exc: AccessDenied):
    if exc.conceal:
        return error_response(404, exc.code, exc.message)
    if is_fhir_request():  # an app's token was valid, but its scopes do not reach this
        return error_response(403, exc.code, exc.message, headers=bearer_challenge("insufficient_scope", exc.message))
    offer = exc.action in BREAK_GLASS_ACTIONS and "care team" in exc.reason
    return error_response(403, exc.code, exc.message,
                          break_glass_patient=getattr(exc.resource, "patient_id", None) if offer else None)


@bp.app_errorhandler(AuditUnavailable)
def _audit_unavailable(exc: AuditUnavailable):
    return error_response(503, exc.code, exc.message)


@bp.app_errorhandler(sa.exc.OperationalError)
@bp.app_errorhandler(sa.exc.InterfaceError)
def _database_unavailable(exc):
    end_session()
    g._login_user = login_manager.anonymous_user()  # the error page must not query the database again
    log.error("database unavailable", extra={"error": type(exc.orig).__name__ if exc.orig else type(exc).__name__})
    return error_response(503, "database_unavailable", "The records database is unavailable. Try again shortly.")


@bp.app_errorhandler(DecryptionError)
def _undecryptable(exc: DecryptionError):
    # Loud, never silent garbage: the log names table, column and row (identifiers, not values).
    DECRYPT_FAILURES.inc()
    log.error("field decryption failed", extra={"error": f"{exc.table}.{exc.column} row {exc.row_id}"})
    return error_response(500, "undecryptable", "A record could not be decrypted. The problem has been logged.")


@bp.app_errorhandler(CSRFError)
def _csrf(exc: CSRFError):
    return error_response(400, "csrf", "The form expired or was not sent by this site. Reload the page and try again.")


@bp.app_errorhandler(HTTPException)
def _http(exc: HTTPException):
    message = exc.description if exc.code in {400, 413, 429} else TITLES.get(exc.code or 500, exc.name)
    if exc.code == 429:  # a rate limit's refusal is an access attempt like any other
        audit_refusal(LimitReached("rate_limited", message))
    return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), message)


@bp.app_errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("unhandled error", extra={"error": type(exc).__name__})
    return error_response(500, "internal", "An unexpected error occurred. It has been logged.")
