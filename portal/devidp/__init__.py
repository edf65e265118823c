"""The built-in development OpenID provider, for running and demonstrating the portal without an
external identity provider.

``init_app`` mounts it at ``/devidp`` when ``PORTAL_DEV_IDP`` is on. It accepts published demo
passwords, so configuration refuses it in production and ``init_app`` refuses again.
"""
from __future__ import annotations

import logging

from flask import Flask

from portal.config import Settings
from portal.devidp.keys import load_signing_key
from portal.devidp.server import DevAuthorizationServer, build_server
from portal.devidp.store import DevClient
from portal.devidp.users import DEMO_USERS, DemoUser
from portal.devidp.views import EXTENSION_KEY, bp

__all__ = ["DEMO_USERS", "DemoUser", "init_app", "portal_base_url"]

URL_PREFIX = "/devidp"
log = logging.getLogger(__name__)


def init_app(app: Flask, settings: Settings) -> DevAuthorizationServer | None:
    """Mount the provider on the portal when the settings enable it; returns the server (None when off)."""
    if not settings.dev_idp:
        return None
    if settings.production:
        raise RuntimeError("The development OpenID provider must never run in production")
    if not settings.oidc_issuer.rstrip("/").endswith(URL_PREFIX):
        log.warning("PORTAL_OIDC_ISSUER %s does not end in %s; the portal will not be using the development provider",
                    settings.oidc_issuer, URL_PREFIX)
    server = build_server(_portal_client(settings), load_signing_key(app.instance_path),
                          settings.oidc_issuer.rstrip("/"))
    app.extensions[EXTENSION_KEY] = server
    app.register_blueprint(bp, url_prefix=URL_PREFIX)
    log.warning("Development OpenID provider enabled at %s (demo passwords accepted)", URL_PREFIX)
    return server


def portal_base_url(settings: Settings) -> str:
    """The portal's own address: the external URL if configured, else the issuer without ``/devidp``."""
    if settings.external_url:
        return settings.external_url.rstrip("/")
    issuer = settings.oidc_issuer.rstrip("/")
    return issuer[: -len(URL_PREFIX)] if issuer.endswith(URL_PREFIX) else issuer


def _portal_client(settings: Settings) -> DevClient:
    """Register the portal with exactly its callback and its home page as post-logout target."""
    base = portal_base_url(settings)
    return DevClient(
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        redirect_uris=(f"{base}/auth/callback",),
        post_logout_redirect_uris=(f"{base}/",),
    )
