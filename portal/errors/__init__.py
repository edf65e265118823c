"""Errors as their own blueprint (microblog's shape): one mapping from domain errors to HTTP answers.

Services raise ``portal.exceptions``; views let them rise; ``handlers`` turns each into a status and a
body: the standard JSON error ``{"error": {"code", "message"}}`` for API callers, a friendly page
without internals for browsers. A signed-in person's refused request is audited on the way.
"""
from flask import Blueprint

bp = Blueprint("errors", __name__)

from portal.errors import handlers  # noqa: E402,F401 - registers the handlers on bp
from portal.errors.handlers import audit_refusal, error_response, status_of  # noqa: E402

__all__ = ["audit_refusal", "bp", "error_response", "status_of"]
