"""The authorization server of this app (built once from the settings) and the addresses it publishes."""
from __future__ import annotations

from pathlib import Path

from authlib.integrations.flask_oauth2 import ResourceProtector
from flask import Flask, current_app, url_for
from joserfc.jwk import RSAKey

from portal.config import Settings
from portal.fhir.metadata import Endpoints
from portal.fhir.server import Settings as ServerSettings
from portal.fhir.server import SmartAuthorizationServer, build_server
from portal.keyfiles import rsa_key_file, rsa_signing_key

EXTENSION = "portal.smart"
KEY_FILENAME = "smart-signing-key.pem"


def init_app(app: Flask, settings: Settings) -> None:
    server_settings = ServerSettings(settings.external_url, signing_key(settings, app.instance_path),
                                     settings.smart_access_token_seconds, settings.smart_refresh_token_days)
    app.extensions[EXTENSION] = build_server(server_settings)


def signing_key(settings: Settings, instance_path: str) -> RSAKey:
    """PORTAL_SMART_SIGNING_KEY; outside production, when unset, a key kept in the instance folder."""
    if settings.smart_signing_key:
        try:
            return rsa_signing_key(settings.smart_signing_key)
        except ValueError as exc:
            raise RuntimeError(f"PORTAL_SMART_SIGNING_KEY is not an RSA private key in PEM: {exc}") from None
    return rsa_key_file(Path(instance_path) / KEY_FILENAME)


def smart_server() -> SmartAuthorizationServer:
    return current_app.extensions[EXTENSION][0]


def protector() -> ResourceProtector:
    return current_app.extensions[EXTENSION][1]


def endpoints() -> Endpoints:
    settings = smart_server().settings
    base = settings.portal_base
    return Endpoints(fhir_base=settings.fhir_base, authorize=base + url_for("smart.authorize"),
                     token=base + url_for("smart.token"), revoke=base + url_for("smart.revoke"),
                     introspect=base + url_for("smart.introspect"), manage=base + url_for("smart.connected_apps"),
                     jwks=base + url_for("smart.jwks"))
