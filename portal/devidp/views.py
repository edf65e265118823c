"""HTTP endpoints of the development provider, mounted at ``/devidp``.

The portal reaches these over HTTP exactly as it would a production provider. The views are thin:
request validation and responses come from Authlib, and the pages never touch ``flask.session``
(that cookie belongs to the portal), which is why every authorization shows the sign-in form.
"""
from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, render_template, request

from portal.devidp.server import DevAuthorizationServer
from portal.devidp.store import SUPPORTED_SCOPES, TOKEN_AUTH_METHODS
from portal.devidp.users import DEMO_USERS, DemoUser, authenticate
from portal.extensions import csrf, limiter

EXTENSION_KEY = "portal.devidp"
CLAIMS_SUPPORTED = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "preferred_username",
                    "email", "email_verified", "roles", "patient_id")

bp = Blueprint("devidp", __name__)


def _server() -> DevAuthorizationServer:
    return current_app.extensions[EXTENSION_KEY]


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Connect Discovery; every URL is built from the issuer so it matches the issuer exactly."""
    issuer = _server().issuer
    return jsonify({
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "end_session_endpoint": f"{issuer}/logout",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": list(SUPPORTED_SCOPES),
        "claims_supported": list(CLAIMS_SUPPORTED),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
    })


@bp.get("/jwks")
def jwks() -> Response:
    return jsonify(_server().public_jwks())


@bp.route("/authorize", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"], deduct_when=lambda response: response.status_code == 401)
def authorize() -> Response | tuple[str, int]:
    """Show the sign-in form (GET) or check the demo password and issue a code (POST).

    The request is validated before anything else, so an unknown client or unregistered
    redirect URI gets an error page here and is never redirected to.
    """
    server = _server()
    user = _submitted_user() if request.method == "POST" else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _authorization_error(server, error)
    if request.method == "GET":
        return _sign_in_page()
    if user is None:
        return _sign_in_page(error="Wrong login or password.", status=401)
    return server.create_authorization_response(grant_user=user, grant=grant)


@bp.post("/token")
@csrf.exempt
def token() -> Response:
    """The relying party posts here server to server, authenticated by its client secret, not a CSRF token."""
    return _server().create_token_response()


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo() -> Response:
    """Bearer-token protected; POST is allowed by OpenID Connect Core and carries no CSRF token."""
    return _server().create_endpoint_response("userinfo")


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt
def logout() -> Response | tuple[str, int]:
    """RP-initiated logout. The relying party may POST it from its own page, so there is no CSRF token;
    the worst a forged request can do is revoke tokens of the person named in a valid id_token_hint."""
    server = _server()
    try:
        validated = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return _no_store(render_template("devidp/signed_out.html", error=error.description), 400)
    response = server.create_endpoint_response("end_session", validated)
    return response or _no_store(render_template("devidp/signed_out.html", error=None), 200)


def _submitted_user() -> DemoUser | None:
    return authenticate(request.form.get("login", ""), request.form.get("password", ""))


def _sign_in_page(error: str | None = None, status: int = 200) -> tuple[Response, int]:
    """The form posts back to the same URL, so the authorization parameters travel in the query string."""
    page = render_template(
        "devidp/authorize.html",
        users=DEMO_USERS,
        action=request.script_root + request.full_path,
        login=request.form.get("login", "") if error else "",
        error=error,
    )
    return _no_store(page, status)


def _authorization_error(server: DevAuthorizationServer, error: OAuth2Error) -> Response | tuple[Response, int]:
    """Redirect errors only to a redirect URI Authlib has already checked against the registration."""
    if error.redirect_uri:
        return server.handle_error_response(None, error)
    page = render_template("devidp/error.html", error=error.error, description=error.description)
    return _no_store(page, 400)


def _no_store(page: str, status: int) -> tuple[Response, int]:
    """Sign-in pages carry a CSRF token and outcomes of a sign-in; no cache should keep them."""
    response = current_app.make_response(page)
    response.headers["Cache-Control"] = "no-store"
    return response, status
