"""Apps patients connect: the SMART on FHIR authorization server, the app registry and the FHIR R4 API.

Two blueprints: ``fhir`` (the FHIR base, ``/fhir``: discovery, the CapabilityStatement and the US Core
read API, where every error is an OperationOutcome) and ``smart`` (``/oauth/...``: authorize with the
consent page, token, revocation, introspection and the JWKS; ``/me/apps``, a patient's Connected apps;
``/admin/apps``, the registry).
"""
from flask import Blueprint

bp = Blueprint("smart", __name__)
api_bp = Blueprint("fhir", __name__, url_prefix="/fhir")

from portal.fhir import api, views  # noqa: E402,F401  (registers the views on the blueprints)
from portal.fhir.context import init_app  # noqa: E402

__all__ = ["api_bp", "bp", "init_app"]
