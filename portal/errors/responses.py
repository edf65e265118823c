"""The one mapping from a domain error to its HTTP status, and the bodies every error answer is built from.

Kept apart from the handlers so that any module (/metrics too) can build an error body
without importing the audit path the handlers need.
"""
from __future__ import annotations

import json

from flask import Response, jsonify, render_template

from portal.exceptions import (
    AuditUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    LimitReached,
    NotFound,
    PortalError,
    ProviderUnavailable,
    Unauthenticated,
)
from portal.request_fields import is_fhir_request, wants_json

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
          ProviderUnavailable: 502, AuditUnavailable: 503}
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
        return json_error(status, code, message)
    title = CODE_TITLES.get(code) or TITLES.get(status, "Error")
    return render_template("errors/error.html", status=status, title=title, message=message, code=code, **context), status


def json_error(status: int, code: str, message: str, **fields: str) -> tuple[Response, int]:
    """The standard JSON error body ``{"error": {"code", "message"}}`` (and any ``fields``) with its status."""
    return jsonify(error={"code": code, "message": message, **fields}), status


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
