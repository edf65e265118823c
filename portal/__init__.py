"""The patient portal: create_app() builds the Flask application and binds every extension."""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import cli, observability, openapi, security, services, witnessing
from portal.admin import bp as admin_bp
from portal.auth import bp as auth_bp
from portal.compliance import bp as compliance_bp
from portal.config import INSTANCE_DIR, Settings
from portal.db import bind_engine, create_engine, end_session
from portal.devidp import init_app as init_devidp
from portal.disclosures import bp as disclosures_bp
from portal.errors.handlers import bp as errors_bp
from portal.fhir import api_bp as fhir_api_bp
from portal.fhir import bp as smart_bp
from portal.fhir import init_app as init_smart
from portal.main import bp as main_bp
from portal.messaging import bp as messaging_bp
from portal.records import bp as records_bp

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the portal from validated settings (read from the environment when not given)."""
    settings = settings or Settings.from_env()
    # templates/ and static/ are found inside the package (portal/templates links to the repository's templates/).
    app = Flask(__name__, instance_path=str(INSTANCE_DIR))
    app.config.update(_flask_config(settings))
    app.extensions["portal.settings"] = settings
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies,
                                x_host=settings.trusted_proxies)

    observability.init_app(app)
    engine = create_engine(settings.database_url)
    app.extensions["portal.engine"] = engine
    bind_engine(engine)
    app.teardown_appcontext(end_session)
    services.init_app(app, settings, engine)
    witnessing.init_app(app)
    security.init_app(app, settings)
    _register_blueprints(app, settings)
    return app


def _flask_config(settings: Settings) -> dict:
    return {
        "SECRET_KEY": settings.secret_key,
        "SESSION_COOKIE_NAME": "__Host-portal" if settings.cookies_secure else "portal",
        "SESSION_COOKIE_SECURE": settings.cookies_secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": settings.session_max_hours * 3600,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "WTF_CSRF_TIME_LIMIT": None,
        "RATELIMIT_STORAGE_URI": settings.ratelimit_storage_url,
        "RATELIMIT_HEADERS_ENABLED": True,
        "PREFERRED_URL_SCHEME": "https" if settings.cookies_secure else "http",
        "TESTING": settings.env == "test",
    }


def _register_blueprints(app: Flask, settings: Settings) -> None:
    app.register_blueprint(errors_bp)
    cli.init_app(app)
    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp, url_prefix="/auth")
    app.register_blueprint(records_bp)
    app.register_blueprint(messaging_bp)
    app.register_blueprint(compliance_bp, url_prefix="/compliance")
    app.register_blueprint(disclosures_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    openapi.init_app(app)
    init_smart(app, settings)
    app.register_blueprint(smart_bp)
    app.register_blueprint(fhir_api_bp)
    if settings.dev_idp:
        init_devidp(app, settings)
