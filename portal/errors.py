"""Friendly error pages and the standard JSON error body, without internals or PHI."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, g, jsonify, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.access import AccessDenied, AuditUnavailable, record
from portal.crypto import DecryptionError
from portal.db import end_session
from portal.extensions import login_manager
from portal.observability import DECRYPT_FAILURES

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


class ApiError(Exception):
    """A refusal with a code and message that JSON callers and pages both understand."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def error_response(status: int, code: str, message: str, **context):
    if wants_json():
        return jsonify(error={"code": code, "message": message}), status
    title = CODE_TITLES.get(code) or TITLES.get(status, "Error")
    return render_template("errors/error.html", status=status, title=title, message=message, code=code, **context), status


def audit_refusal(exc: ApiError) -> None:
    """A signed-in user's malformed or unknown request is an access attempt: record it, with no input values."""
    from flask_login import current_user

    if not current_user.is_authenticated:
        return
    route = request.url_rule.rule if request.url_rule else "unmatched"
    try:
        record("request.refused", "denied", reason=exc.code, details={"route": route, "status": exc.status})
    except AuditUnavailable:
        log.error("could not audit a refused request", extra={"error": exc.code})


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        audit_refusal(exc)
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(AccessDenied)
    def _access_denied(exc: AccessDenied):
        if exc.decision.conceal:
            return error_response(404, "not_found", "There is no such record.")
        patient_id = getattr(exc.resource, "patient_id", None)
        offer = exc.action in {"chart.read", "chart.write"} and "care team" in exc.decision.reason
        return error_response(403, "forbidden", f"Access refused: {exc.decision.reason}.",
                              break_glass_patient=patient_id if offer else None)

    from portal.auth import step_up  # here: portal.auth's views import this module

    @app.errorhandler(step_up.StepUpRequired)
    def _step_up_required(exc: step_up.StepUpRequired):
        start = url_for("auth.step_up_start", action=exc.action, next=exc.next_url)
        if wants_json():
            return jsonify(error={"code": "step_up_required", "step_up_url": start,
                                  "message": f"Sign in again to {step_up.ACTIONS[exc.action]}."}), 401
        return redirect(start)

    @app.errorhandler(AuditUnavailable)
    def _audit_unavailable(_exc):
        return error_response(503, "audit_unavailable",
                              "The audit log cannot be written right now, so records are not being served. Try again shortly.")

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.InterfaceError)
    def _database_unavailable(exc):
        end_session()
        g._login_user = login_manager.anonymous_user()  # the error page must not query the database again
        log.error("database unavailable", extra={"error": type(exc.orig).__name__ if exc.orig else type(exc).__name__})
        return error_response(503, "database_unavailable", "The records database is unavailable. Try again shortly.")

    @app.errorhandler(DecryptionError)
    def _undecryptable(exc: DecryptionError):
        # Loud, never silent garbage: the log names table, column and row (identifiers, not values).
        DECRYPT_FAILURES.inc()
        log.error("field decryption failed", extra={"error": f"{exc.table}.{exc.column} row {exc.row_id}"})
        return error_response(500, "undecryptable", "A record could not be decrypted. The problem has been logged.")

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        return error_response(400, "csrf", "The form expired or was not sent by this site. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        message = exc.description if exc.code in {400, 413, 429} else TITLES.get(exc.code or 500, exc.name)
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error", extra={"error": type(exc).__name__})
        return error_response(500, "internal", "An unexpected error occurred. It has been logged.")
