"""Errors as their own blueprint (microblog's shape): one mapping from domain errors to HTTP answers.

Services raise ``portal.exceptions``; views let them rise; ``handlers`` turns each into a status and a
body: the standard JSON error ``{"error": {"code", "message"}}`` for API callers, a friendly page
without internals for browsers. A signed-in person's refused request is audited on the way.

``responses`` holds the mapping (``status_of``) and the bodies, and is all this package exposes: the
/metrics endpoint builds its refusal from it, and the handlers' audit path imports them back, so the
handlers (``bp``, ``audit_refusal``) are imported from ``portal.errors.handlers`` itself.
"""
from portal.errors.responses import error_response, json_error, status_of

__all__ = ["error_response", "json_error", "status_of"]
