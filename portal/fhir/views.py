"""The authorization server's endpoints, the patient's Connected apps page and the administrators' app registry.

The person who connects an app signs in through the portal's usual OpenID provider (an existing
session is reused), then decides on a consent page. Errors before the app's redirect URI is known to
be registered are shown to the person and never sent to it (RFC 6749 4.1.2.1); later ones go back to
the app. Every decision, token issued or refused, revocation and introspection is audited.
"""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from flask import (
    Blueprint,
    Response,
    after_this_request,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from portal import access, services
from portal.access import record
from portal.actions import Action, Section
from portal.errors import error_response, status_of
from portal.errors.handlers import audit_refusal
from portal.exceptions import InvalidInput
from portal.extensions import csrf, limiter, talisman
from portal.fhir import service
from portal.fhir.context import smart_server
from portal.fhir.server import Approval, record_for_grant
from portal.people import own_patient_id
from portal.policy import ChartRef
from portal.scopes import FHIR_USER, OPENID, ScopeSet, consent_items
from portal.security import content_security_policy, policy_header
from portal.validation import parse_id

bp = Blueprint("smart", __name__)

ENDPOINT_RATE_LIMIT = "300 per minute"  # per address: apps refresh, but nobody guesses codes at speed


def app_endpoint(view: Callable) -> Callable:
    """An endpoint apps post to server to server (token, revocation, introspection): no CSRF token, as client
    authentication and PKCE are the proof, and ENDPOINT_RATE_LIMIT per address."""
    return csrf.exempt(limiter.limit(ENDPOINT_RATE_LIMIT)(view))


def app_details(app) -> dict[str, str]:
    return {"client_id": app.client_id, "app": app.name}


# --------------------------------------------------------------------------- authorization and consent


@bp.route("/oauth/authorize", methods=["GET", "POST"])
@talisman(content_security_policy=None)  # set below: the consent form's answer is redirected to the app
def authorize():
    """Validate the app's request, sign the person in, ask for consent, then send a code (or a refusal) back."""
    after_this_request(_content_security_policy)
    server = smart_server()
    person = current_user if current_user.is_authenticated else None
    try:
        grant = server.get_consent_grant(end_user=person)
    except OAuth2Error as error:
        return _request_refused(error)
    if person is None:
        return redirect(url_for("auth.login", next=request.full_path))
    app = grant.client.app
    patient_id = own_patient_id(person)  # staff and unlinked accounts connect no app: a page says why
    requested = ScopeSet.parse(grant.request.scope)
    if request.method == "GET":
        target = urlsplit(grant.redirect_uri)
        g.consent_redirect_origin = f"{target.scheme}://{target.netloc}"
        return render_template("fhir/consent.html", app=app, items=consent_items(requested), offline=requested.offline,
                               identity=requested.has(OPENID) or requested.has(FHIR_USER),
                               redirect_host=urlsplit(grant.redirect_uri).netloc)
    if request.form.get("decision") != "allow":
        record(Action.SMART_AUTHORIZE, "denied", reason="access_denied", patient_id=patient_id,
               resource_type=Section.CONNECTED_APPS, details=app_details(app))
        return server.create_authorization_response(grant_user=None, grant=grant)
    kept = set(request.form.getlist("resource_type"))
    unticked = [t for t in requested.resource_types() if t not in kept]
    granted = requested.without_types(unticked)
    record(Action.SMART_AUTHORIZE, "allowed", reason="consent given", patient_id=patient_id,
           resource_type=Section.CONNECTED_APPS, resource_id=app.id,
           details={**app_details(app), "scopes": granted.text, "unticked": ",".join(unticked)})
    return server.create_authorization_response(grant_user=Approval(person, patient_id, granted.text), grant=grant)


def _content_security_policy(response: Response) -> Response:
    """The portal's policy, whatever this endpoint answers; on the consent page, the app's own address is added
    to form-action, since browsers hold the redirect that answers the consent form to it."""
    policy = content_security_policy(services.settings())
    app_origin = g.get("consent_redirect_origin")
    if app_origin:
        policy["form-action"] += " " + app_origin
    response.headers["Content-Security-Policy"] = policy_header(policy)
    return response


def _request_refused(error: OAuth2Error):
    """A malformed or unacceptable authorization request: back to the app only once its redirect URI is trusted."""
    client_id = request.values.get("client_id", "")[:64]
    record(Action.SMART_AUTHORIZE, "denied", reason=error.error,
           details={"client_id": client_id, "description": (error.description or "")[:200],
                    "redirected": bool(error.redirect_uri)})
    if error.redirect_uri:
        return smart_server().handle_error_response(None, error)
    return error_response(400, f"oauth_{error.error}", "The app's request to connect cannot be accepted: "
                          f"{error.description or error.error}. Nothing was shared; tell the app's maker.")


# --------------------------------------------------------------------------- the token, revocation and introspection


@bp.post("/oauth/token")
@app_endpoint
def token():
    response = smart_server().create_token_response()
    issued: Approval | None = g.get("smart_issued")
    grant_type = request.form.get("grant_type", "")[:40]
    if response.status_code == 200 and issued is not None:
        record_for_grant(Action.SMART_TOKEN, issued.grant, grant_type, scopes=issued.grant.scopes)
    else:
        _record_refusal(Action.SMART_TOKEN, response, g.get("smart_refusal"),
                        grant_type=grant_type, status=response.status_code)
    return response


@bp.post("/oauth/revoke")
@app_endpoint
def revoke():
    response = smart_server().create_endpoint_response("revocation")
    revoked = g.get("smart_revoked")
    if revoked is not None:
        record_for_grant(Action.SMART_TOKEN_REVOKED, revoked.row.grant, service.REVOKED_BY_APP,
                         token="refresh_token" if revoked.refresh else "access_token")
    elif response.status_code != 200:
        _record_refusal(Action.SMART_TOKEN_REVOKED, response)
    return response


@bp.post("/oauth/introspect")
@app_endpoint
def introspect():
    response = smart_server().create_endpoint_response("introspection")
    known = g.get("smart_introspected")
    if response.status_code != 200:
        _record_refusal(Action.SMART_INTROSPECT, response)
    else:
        details = {"client_id": _presented_client_id(), "active": known is not None}
        record(Action.SMART_INTROSPECT, "allowed", reason="introspected",
               patient_id=known.row.grant.patient_id if known else None, details=details)
    return response


@bp.get("/oauth/jwks")
def jwks():
    return jsonify(smart_server().public_jwks())


def _record_refusal(action: Action, response: Response, reason: str | None = None, **details: object) -> None:
    """An endpoint's refusal on record: why (``reason``, else the OAuth error it answered) and who claimed to ask."""
    record(action, "denied", reason=reason or _oauth_error(response),
           details={"client_id": _presented_client_id(), **details})


def _oauth_error(response: Response) -> str:
    body = response.get_json(silent=True) or {}
    return str(body.get("error", f"status_{response.status_code}"))[:60]


def _presented_client_id() -> str:
    """The client id the request claims (Basic auth or the form), for the audit log: never trusted here."""
    auth = request.authorization
    return ((auth.username if auth and auth.type == "basic" else None) or request.form.get("client_id") or "")[:64]


# --------------------------------------------------------------------------- the patient's Connected apps


@bp.get("/me/apps")
@login_required
def connected_apps():
    patient_id = own_patient_id(current_user)
    access.authorize(Action.APPS_LIST, ChartRef(patient_id, Section.CONNECTED_APPS))
    grants = service.connected_apps(current_user.id)
    return render_template("fhir/connected_apps.html", grants=[(grant, _scope_words(grant.scopes)) for grant in grants])


def _scope_words(scopes: str) -> list[str]:
    parsed = ScopeSet.parse(scopes)
    words = [f"{item.words} ({item.detail})" for item in consent_items(parsed)]
    if parsed.offline:
        words.append("Keeps access when you are not using it, until you disconnect it")
    if parsed.has(FHIR_USER) or parsed.has(OPENID):
        words.append("Knows that it is you")
    return words


@bp.post("/me/apps/<grant_id>/revoke")
@login_required
def revoke_app(grant_id: str):
    """Disconnect an app: its grant and every token it holds end at once."""
    patient_id = own_patient_id(current_user)
    grant_id = parse_id(grant_id, "connection id")
    access.authorize(Action.APPS_REVOKE, ChartRef(patient_id, Section.CONNECTED_APPS), details={"grant": grant_id})
    grant = service.own_grant(current_user.id, grant_id)
    ended = service.revoke_grant(grant, service.REVOKED_BY_PATIENT)
    record_for_grant(Action.SMART_GRANT_REVOKED, grant, service.REVOKED_BY_PATIENT, tokens=ended)
    flash(f"{grant.app.name} is disconnected: it can no longer read your records.", "success")
    return redirect(url_for("smart.connected_apps"))


# --------------------------------------------------------------------------- the administrators' registry


@bp.get("/admin/apps")
@login_required
def registered_apps():
    access.authorize(Action.ADMIN_APPS)
    return render_template("fhir/admin_apps.html", apps=service.registered_apps(), registration=None, form={})


@bp.post("/admin/apps")
@login_required
def register_app():
    """Register an app; a confidential app's secret is on this one page and nowhere else."""
    access.authorize(Action.ADMIN_APPS, details={"change": "register"})
    form = request.form
    try:
        registration = service.register_app(form.get("name", ""), form.get("redirect_uris", "").split(),
                                            form.get("client_type") == "public", form.get("scopes", ""),
                                            created_by=current_user.id)
    except InvalidInput as exc:  # the form again, as typed, saying what to fix
        audit_refusal(exc)
        return render_template("fhir/admin_apps.html", apps=service.registered_apps(), registration=None, form=form,
                               error=exc.message), status_of(exc)
    record(Action.ADMIN_APP_REGISTERED, "allowed", resource_type="smart_app", resource_id=registration.app.id,
           details={**app_details(registration.app), "public": registration.app.public})
    return render_template("fhir/admin_apps.html", apps=service.registered_apps(), registration=registration, form={})
