"""Headers, CSRF, rate limits, cookies and sign-in sessions: everything a request passes through first."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import Flask, request

from portal.auth.sessions import load_user, on_unauthorized
from portal.config import Settings
from portal.extensions import csrf, limiter, login_manager, talisman


def content_security_policy(settings: Settings) -> dict[str, str]:
    """No inline script or style anywhere; sign-out may redirect a form post to the provider."""
    issuer = urlparse(settings.oidc_issuer)
    provider = f"{issuer.scheme}://{issuer.netloc}"
    return {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "font-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
        "form-action": f"'self' {provider}",
    }


def policy_header(policy: dict[str, str]) -> str:
    """A Content-Security-Policy dict as its header value."""
    return "; ".join(f"{directive} {value}" for directive, value in policy.items())


def init_app(app: Flask, settings: Settings) -> None:
    talisman.init_app(
        app,
        content_security_policy=content_security_policy(settings),
        force_https=settings.production,
        strict_transport_security=settings.production,
        strict_transport_security_max_age=31536000,
        session_cookie_secure=settings.cookies_secure,
        session_cookie_http_only=True,
        referrer_policy="same-origin",
        frame_options="DENY",
        permissions_policy={"geolocation": "()", "camera": "()", "microphone": "()"},
    )
    # Load balancers and orchestrators probe over plain HTTP inside the network.
    for endpoint in ("observability.healthz", "observability.readyz", "observability.metrics"):
        app.view_functions[endpoint] = talisman(force_https=False)(app.view_functions[endpoint])
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.signin_page"
    login_manager.session_protection = None  # the server-side LoginSession is the stronger check
    login_manager.user_loader(load_user)
    login_manager.unauthorized_handler(on_unauthorized)

    @app.context_processor
    def _session_settings():
        return {"idle_minutes": settings.session_idle_minutes}

    @app.after_request
    def _no_store(response):
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response
