"""Process-wide services built from the settings: keyring, audit store, Socket.IO."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, current_app
from limits import strategies
from limits.storage import storage_from_string

from audit import GroupCommit, SigningKey, SqlAuditStore, load_signing_key
from portal.config import Settings
from portal.crypto import Keyring, install_keyring
from portal.db import create_engine
from portal.extensions import oauth, socketio
from portal.message_queue import RedisQueue
from portal.packets import GuardedPacket, socket_loggers


def init_app(app: Flask, settings: Settings, engine: sa.Engine) -> None:
    install_keyring(Keyring.load(settings.keyring))
    signing_key = load_signing_key(settings.audit_signing_key)
    app.extensions["portal.audit_signing_key"] = signing_key
    # Its own connection pool: a request already holds a connection of the main pool when it audits,
    # so sharing one pool would let a burst of requests wait on each other for a second connection.
    app.extensions["portal.audit_store"] = SqlAuditStore(
        create_engine(settings.database_url), signing_key, checkpoint_every=settings.audit_checkpoint_every,
        lock_timeout=settings.audit_lock_timeout_seconds, origin=settings.audit_log_origin,
        checkpoint_seconds=settings.audit_checkpoint_seconds,
    )
    # Concurrent requests' audit events share one transaction; each request still waits for its own commit.
    app.extensions["portal.audit_appender"] = GroupCommit(app.extensions["portal.audit_store"],
                                                           retry_within=settings.audit_lock_timeout_seconds)
    # client_manager is always given: SocketIO() is shared, and an earlier app's queue must not linger.
    queue_options: dict = {"message_queue": settings.message_queue or None, "client_manager": None}
    if settings.message_queue.startswith(("redis://", "rediss://")):
        # Publishes off the event handlers' path, with timeouts: a hung Redis must not hold back acks.
        queue_options["client_manager"] = RedisQueue(settings.message_queue, channel=settings.message_queue_channel)
    socketio.init_app(
        app,
        **queue_options,
        cors_allowed_origins=[settings.external_url] if settings.external_url else None,
        ping_interval=10,
        ping_timeout=10,
        max_http_buffer_size=64 * 1024,
        serializer=GuardedPacket,
        **socket_loggers(),
    )
    app.extensions["portal.rate_limits"] = strategies.MovingWindowRateLimiter(
        storage_from_string(settings.ratelimit_storage_url))
    oauth.init_app(app)
    oauth.register(
        "provider",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256", "timeout": 10},
    )


def settings() -> Settings:
    return current_app.extensions["portal.settings"]


def audit_store() -> SqlAuditStore:
    return current_app.extensions["portal.audit_store"]


def audit_appender() -> GroupCommit:
    return current_app.extensions["portal.audit_appender"]


def audit_signing_key() -> SigningKey:
    """The Ed25519 key that signs checkpoints and export manifests; the database never holds it."""
    return current_app.extensions["portal.audit_signing_key"]


def rate_limits() -> strategies.RateLimiter:
    """Per-user limits outside HTTP (chat sends), in the same storage as Flask-Limiter's."""
    return current_app.extensions["portal.rate_limits"]


def engine() -> sa.Engine:
    return current_app.extensions["portal.engine"]
