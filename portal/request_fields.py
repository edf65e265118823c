"""What the current request says about itself, for audit events and logs: request id, address, device."""
from __future__ import annotations

import hashlib
import uuid

from flask import g, has_request_context, request, session

USER_AGENT_MAX = 200
#: The FHIR base path: ``portal.fhir`` serves the FHIR API there, and every error under it is an OperationOutcome.
FHIR_BASE_PATH = "/fhir"


def request_id() -> str:
    """The request's correlation id: the client's ``X-Request-ID`` when well formed, else a new one."""
    if "request_id" not in g:
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _valid_request_id(supplied) else uuid.uuid4().hex
    return g.request_id


def _valid_request_id(value: str) -> bool:
    return 8 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def session_hash() -> str | None:
    """A short hash of the browser's session token: links a session's events without revealing it."""
    token = session.get("sid")
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


def user_agent() -> str | None:
    """The client's User-Agent, cut to a length every store of it accepts."""
    return (request.user_agent.string or "")[:USER_AGENT_MAX] or None


def route_pattern() -> str:
    """The matched route's pattern (``/patients/<patient_id>``), never the URL: paths and queries carry identifiers."""
    return request.url_rule.rule if request.url_rule else "unmatched"


def audit_fields() -> dict[str, str | None]:
    """The request's part of an audit event; empty outside a request (CLI, background tasks)."""
    if not has_request_context():
        return {}
    return {
        "source_ip": request.remote_addr,
        "user_agent": user_agent(),
        "request_id": request_id(),
        "session_hash": session_hash(),
    }


def act_for_app(details: dict[str, str]) -> None:
    """This request is an app's, acting for the person its token names: every audit event of it names the app."""
    g.acting_app = dict(details)


def acting_app_details() -> dict[str, str]:
    """The app of this request (client id, name, grant, scopes) for its audit events; empty for people's requests."""
    return dict(g.get("acting_app") or {}) if has_request_context() else {}


def is_fhir_request() -> bool:
    return request.path == FHIR_BASE_PATH or request.path.startswith(FHIR_BASE_PATH + "/")


def wants_json() -> bool:
    """API callers (any ``/api/`` path, or a client asking for JSON) get JSON errors rather than pages."""
    return "/api/" in request.path or request.accept_mimetypes.best == "application/json"
