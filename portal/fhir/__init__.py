"""Apps patients connect: the SMART on FHIR authorization server, the app registry and the FHIR R4 API.

Two blueprints: ``fhir`` (the FHIR base, ``/fhir``: discovery, the CapabilityStatement and the US Core
read API, where every error is an OperationOutcome) and ``smart`` (``/oauth/...``: authorize with the
consent page, token, revocation, introspection and the JWKS; ``/me/apps``, a patient's Connected apps;
``/admin/apps``, the registry).
"""
from portal.fhir.api import bp as api_bp
from portal.fhir.context import init_app
from portal.fhir.views import bp

__all__ = ["api_bp", "bp", "init_app"]
