"""Structured JSON logs with request ids, Prometheus metrics, and the health endpoints."""
from __future__ import annotations

import hmac
import json
import logging
import sys
import time
import traceback
from datetime import datetime, timezone

import redis
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from audit import AuditWriteError
from audit.note import Verifier
from portal import services
from portal.crypto import DecryptionError, KeyringError, check_stored_values
from portal.db import Base
from portal.errors import json_error
from portal.request_fields import request_id, route_pattern

REGISTRY = CollectorRegistry()
# The standard series the default registry would carry: process_* (CPU, memory, open files, start time),
# python_info and python_gc_*. Each worker is its own process, scraped on its own (deploy/prometheus.yml).
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
HTTP_REQUESTS = Counter("portal_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("portal_http_request_seconds", "HTTP request latency", ["route"], registry=REGISTRY)
SOCKET_CONNECTIONS = Gauge("portal_socketio_connections", "Open Socket.IO connections", registry=REGISTRY)
MESSAGES = Counter("portal_messages_total", "Chat messages stored", registry=REGISTRY)
AUDIT_APPENDS = Counter("portal_audit_appends_total", "Audit events appended", ["outcome"], registry=REGISTRY)
AUDIT_FAILURES = Counter("portal_audit_failures_total", "Audit appends that failed", registry=REGISTRY)
WITNESS_FAILURES = Counter("portal_audit_witness_failures_total",
                           "Rounds in which the audit log's witness did not cosign (unreachable or refused)",
                           registry=REGISTRY)
WITNESS_LAG = Gauge("portal_audit_witness_lag_seconds",
                    "Seconds since the log signed a checkpoint its witness has not cosigned (0: all cosigned)",
                    registry=REGISTRY)
DECRYPT_FAILURES = Counter("portal_decrypt_failures_total", "Field decryptions that failed", registry=REGISTRY)

# app.extensions key: time.monotonic() of the latest failed audit append.
LAST_AUDIT_FAILURE = "portal.last_audit_failure"

bp = Blueprint("observability", __name__)
access_log = logging.getLogger("portal.access_log")
_LOG_FIELDS = ("request_id", "action", "error", "route", "method", "status", "duration_ms", "event")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; only whitelisted fields, so no request body or PHI reaches the logs."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-29T22:32:48.423Z``."""
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        entry.update({key: getattr(record, key) for key in _LOG_FIELDS if hasattr(record, key)})
        if record.exc_info:
            # The class and the frames, never the message: exception messages can carry values.
            entry["exception"] = record.exc_info[0].__name__
            entry["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(record.exc_info[2])[-8:]]
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    """JSON lines on standard output, where container runtimes and journald collect them."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response):
        route = route_pattern()
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        HTTP_REQUESTS.labels(route, request.method, response.status_code).inc()
        HTTP_LATENCY.labels(route).observe(elapsed)
        response.headers["X-Request-ID"] = request_id()
        access_log.info("request", extra={"request_id": request_id(), "route": route, "method": request.method,
                                          "status": response.status_code, "duration_ms": round(elapsed * 1000, 1)})
        return response


@bp.get("/healthz")
def healthz():
    return jsonify(status="alive")


@bp.get("/readyz")
def readyz():
    checks = {}
    checks["database"] = _check(lambda: services.engine().connect().close())
    checks["audit_store"] = _check(_audit_appends)
    checks["keyring"] = _check(_keyring_opens_stored_values)
    if services.settings().audit_witness_url:
        checks["audit_witness"] = _check(_witness_within_bound)
    if services.settings().message_queue:
        checks["message_queue"] = _check(lambda: _ping_queue(services.settings().message_queue))
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


@bp.get("/metrics")
def metrics():
    token = services.settings().metrics_token
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not token or not hmac.compare_digest(supplied, token):
        return json_error(401, "unauthorized", "metrics need the bearer token")
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)


def _check(probe) -> str:
    try:
        probe()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        current_app.logger.warning("readiness check failed", extra={"error": type(exc).__name__})
        return "failed"


def _audit_appends() -> None:
    """A rehearsed append, rolled back (reading the head would not notice a refused INSERT or a stuck lock);
    and not ready either for a while after a real append failed, which a rehearsal can miss when only some
    entries are refused; appends of other entries succeeding meanwhile do not shorten that while."""
    failed_at = current_app.extensions.get(LAST_AUDIT_FAILURE)
    if failed_at is not None and time.monotonic() - failed_at < services.settings().audit_failure_not_ready_seconds:
        raise AuditWriteError("the latest audit append failed")
    services.audit_store().probe_append()


def _witness_within_bound() -> None:
    """Failed only when the log has outgrown its last cosignature for longer than the bound: an unreachable
    witness alone is retried in the background and does not stop a worker from serving."""
    settings = services.settings()
    witness = Verifier.from_vkey(settings.audit_witness_key).key()
    lag = services.audit_store().unwitnessed_seconds(witness)
    if lag > settings.audit_witness_max_lag_seconds:
        raise RuntimeError(f"no witness cosignature for {lag:.0f} s")


def _keyring_opens_stored_values() -> None:
    """Loud when the keyring is the wrong one (a restore paired with other keys): not ready, and an error
    naming the table, column and row that did not open (identifiers, never values)."""
    try:
        check_stored_values(services.engine(), [mapper.class_ for mapper in Base.registry.mappers])
    except (DecryptionError, KeyringError) as exc:
        current_app.logger.error("the keyring cannot open the stored records", extra={"error": str(exc)})
        raise


def _ping_queue(url: str) -> None:
    redis.Redis.from_url(url, socket_timeout=2).ping()
