"""The FHIR R4 API under /fhir: discovery, the CapabilityStatement, and US Core reads and searches.

Every resource request carries an app's bearer token. The token names the person and the chart; the
view acts as that person (``current_user``) with the app named on every audit event, and each read or
search goes through ``portal.policy.can`` (the chart, then the scopes the patient granted) before
anything is decrypted. Errors are OperationOutcomes (``portal.errors``).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import MissingAuthorizationError
from flask import Blueprint, Response, g, jsonify, request

from portal.access import authorize, authorized, role_label
from portal.actions import FHIR_SECTIONS, Action
from portal.errors.handlers import record_refusal
from portal.exceptions import NO_SUCH_RECORD, InvalidInput, NotFound, Unauthenticated
from portal.fhir import reads, search, service
from portal.fhir.context import endpoints, protector
from portal.fhir.metadata import capability_statement, openid_configuration, smart_configuration
from portal.policy import AppAccess, FhirRef
from portal.records.fhir import FIXED_CATEGORIES
from portal.request_fields import FHIR_BASE_PATH, act_for_app
from portal.scopes import RESOURCE_TYPES, ScopeSet
from portal.validation import parse_id

bp = Blueprint("fhir", __name__, url_prefix=FHIR_BASE_PATH)

PUBLISHED = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
FHIR_JSON = "application/fhir+json"


def fhir_json(body: dict) -> Response:
    return Response(json.dumps(body), mimetype=FHIR_JSON)


@bp.get("/metadata")
def metadata():
    return fhir_json(capability_statement(endpoints(), PUBLISHED))


@bp.get("/.well-known/smart-configuration")
def smart_discovery():
    return jsonify(smart_configuration(endpoints()))


@bp.get("/.well-known/openid-configuration")
def openid_discovery():
    return jsonify(openid_configuration(endpoints()))


@bp.get("/<resource_type>")
def search_type(resource_type: str):
    app = app_access()
    resource_type = served_type(resource_type)
    query = search.parse(resource_type, request.args, app.patient_id)
    ref = FhirRef(query.patient_id, FHIR_SECTIONS[resource_type], app=app, resource_type=resource_type,
                  categories=query.categories)

    def run() -> dict:
        found = search.matching(query, reads.chart_resources(query.patient_id, resource_type),
                                app.scopes.categories_for(resource_type))
        return search.searchset(query, found, endpoints().fhir_base)

    bundle = authorized(Action.FHIR_SEARCH, run, lambda b: {"fhir_type": resource_type, "total": b["total"]},
                        resource=ref, refused_details={"fhir_type": resource_type})
    service.note_use(app.grant_id)
    return fhir_json(bundle)


@bp.get("/<resource_type>/<resource_id>")
def read(resource_type: str, resource_id: str):
    app = app_access()
    resource_type = served_type(resource_type)
    try:
        resource_id = parse_id(resource_id, f"{resource_type} id")
    except InvalidInput:  # ids here are UUIDs: anything else names nothing
        raise NotFound("not_found", NO_SUCH_RECORD) from None
    owner = reads.owner_of(resource_type, resource_id)
    if owner is None:  # worded as the concealed refusal of another patient's record: existence stays unknown
        raise NotFound("not_found", NO_SUCH_RECORD)
    authorize(Action.FHIR_READ, FhirRef(owner, FHIR_SECTIONS[resource_type], app=app, resource_type=resource_type,
                                        resource_id=resource_id, categories=FIXED_CATEGORIES.get(resource_type, ())),
              details={"fhir_type": resource_type})
    resource = reads.resource(resource_type, resource_id)
    service.note_use(app.grant_id)
    return fhir_json(resource)


@bp.get("/<path:anything>")
def unsupported(anything: str):
    """Anything else under the base: a token first (so the attempt is audited), then 404."""
    app_access()
    raise NotFound("not_supported", f"This server offers read and search of {', '.join(RESOURCE_TYPES)}.")


def served_type(resource_type: str) -> str:
    if resource_type not in RESOURCE_TYPES:
        raise NotFound("unsupported_resource_type", f"The resource type {resource_type[:40]!r} is not offered here; "
                                                    f"this server offers {', '.join(RESOURCE_TYPES)}.")
    return resource_type


def app_access() -> AppAccess:
    """The app and person of this request's bearer token; 401 (audited) for a missing, unknown, expired or
    revoked one. From here on the request acts as the person, and every audit event names the app."""
    try:
        token = protector().acquire_token()
    except OAuth2Error as error:
        raise _refused(error) from None
    grant = token.row.grant
    g._login_user = grant.user  # flask-login's current_user for this request: the person the app acts for
    access = AppAccess(client_id=grant.app.client_id, name=grant.app.name, grant_id=grant.id,
                       patient_id=grant.patient_id, scopes=ScopeSet.parse(token.row.scopes))
    act_for_app(access.audit_details())
    return access


def _refused(error: OAuth2Error) -> Unauthenticated:
    if isinstance(error, MissingAuthorizationError):
        refusal = Unauthenticated("token_required", "Send an access token: Authorization: Bearer <token>.",
                                  token_error=None)
    else:
        refusal = Unauthenticated("invalid_token", "The access token is unknown, expired or revoked.")
    known = g.get("presented_token")
    grant = known.row.grant if known is not None else None
    details = {"client_id": grant.app.client_id, "app": grant.app.name, "grant": grant.id} if grant else None
    record_refusal(refusal, details, actor_id=grant.user_id if grant else None,
                   actor_role=role_label(grant.user) if grant else None)
    return refusal
