"""The handlers: each domain error, database outage, decryption failure and HTTP error, answered once."""
from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa
from flask import Blueprint, g, redirect, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.access import record
from portal.actions import Action
from portal.crypto import DecryptionError
from portal.db import end_session
from portal.errors.responses import TITLES, bearer_challenge, error_response, json_error, status_of
from portal.exceptions import (
    AccessDenied,
    AuditUnavailable,
    LimitReached,
    PortalError,
    StepUpRequired,
    Unauthenticated,
)
from portal.extensions import login_manager
from portal.observability import DECRYPT_FAILURES
from portal.request_fields import is_fhir_request, route_pattern, wants_json

log = logging.getLogger(__name__)
bp = Blueprint("errors", __name__)

BREAK_GLASS_ACTIONS = frozenset({Action.CHART_READ, Action.CHART_WRITE})


def audit_refusal(exc: PortalError) -> None:
    """A signed-in user's malformed or unknown request is an access attempt: record it, with no input values."""
    if exc.audited or not current_user.is_authenticated:
        return
    try:
        record_refusal(exc)
    except AuditUnavailable:
        log.error("could not audit a refused request", extra={"error": exc.code})


def record_refusal(exc: PortalError, details: Mapping[str, object] | None = None, **actor: str | None) -> None:
    """Record the refused request (its route and status, never its input) and mark ``exc`` as on record.
    ``actor`` (actor_id, actor_role) names who asked when that is not the signed-in user, e.g. an app's token."""
    route = route_pattern()
    record(Action.REQUEST_REFUSED, "denied", reason=exc.code,
           details={"route": route, "status": status_of(exc), **(details or {})}, **actor)
    exc.audited = True


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


@bp.app_errorhandler(StepUpRequired)
def _step_up_required(exc: StepUpRequired):
    """A sensitive action without a live step-up: pages go to sign in again, JSON callers learn where."""
    start = url_for("auth.step_up_start", action=exc.action, next=exc.next_url,
                    token=exc.link_token)
    if wants_json():
        return json_error(401, "step_up_required", exc.message, step_up_url=start)
    return redirect(start)


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
