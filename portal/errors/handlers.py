"""The handlers: each domain error, database outage, decryption failure and HTTP error, answered once."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import g, jsonify, render_template, request
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
)
from portal.extensions import login_manager
from portal.observability import DECRYPT_FAILURES
from portal.request_fields import wants_json

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
STATUS = {InvalidInput: 400, Forbidden: 403, NotFound: 404, Conflict: 409, LimitReached: 429, AuditUnavailable: 503}
BREAK_GLASS_ACTIONS = frozenset({Action.CHART_READ, Action.CHART_WRITE})


def status_of(exc: PortalError) -> int:
    """The HTTP status of a domain error: its nearest class in STATUS."""
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 400)


def error_response(status: int, code: str, message: str, **context):
    """The JSON error body for API callers, the error page for browsers."""
    if wants_json():
        return jsonify(error={"code": code, "message": message}), status
    title = CODE_TITLES.get(code) or TITLES.get(status, "Error")
    return render_template("errors/error.html", status=status, title=title, message=message, code=code, **context), status


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


@bp.app_errorhandler(AccessDenied)
def _access_denied(exc: AccessDenied):
    if exc.conceal:
        return error_response(404, exc.code, exc.message)
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
    return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), message)


@bp.app_errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("unhandled error", extra={"error": type(exc).__name__})
    return error_response(500, "internal", "An unexpected error occurred. It has been logged.")
