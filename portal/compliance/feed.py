"""The live audit feed: Socket.IO namespace /audit for compliance officers.

Every appended audit entry is published (identifiers only) to the room "audit-feed".
``socketio.emit`` goes through Flask-SocketIO's message queue when one is configured, so an
event recorded by any worker process (or a CLI command) reaches officers connected to any other.
"""
from __future__ import annotations

import logging

from flask import request
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, join_room

from audit import Entry
from audit.events import format_time
from portal.access import AccessDenied, AuditUnavailable, authorize
from portal.auth import sockets
from portal.auth.sessions import current_login
from portal.extensions import socketio

log = logging.getLogger(__name__)

NAMESPACE = "/audit"
ROOM = "audit-feed"
EVENT = "audit_event"


@socketio.on("connect", namespace=NAMESPACE)
def connect(auth: object = None) -> None:
    """Only signed-in compliance officers may listen; their connecting is itself audited."""
    if not (current_user and current_user.is_authenticated):
        raise ConnectionRefusedError("sign in first")
    try:
        authorize("audit.read", details={"feed": "connect"})
    except AccessDenied:
        raise ConnectionRefusedError("the live audit feed is for compliance officers") from None
    except AuditUnavailable:
        raise ConnectionRefusedError("the audit log is unavailable") from None
    join_room(ROOM)
    sockets.register(request.sid, current_login().id, NAMESPACE)


@socketio.on("disconnect", namespace=NAMESPACE)
def disconnect(reason: object = None) -> None:
    sockets.forget(request.sid)


def feed_payload(entry: Entry) -> dict[str, object]:
    """What the feed carries: identifiers only, never names, reasons or details."""
    event = entry.event
    return {
        "seq": entry.seq,
        "time": format_time(event.time),
        "actor_id": event.actor_id,
        "actor_role": event.actor_role,
        "action": event.action,
        "outcome": event.outcome,
        "patient_id": event.patient_id,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
    }


def publish(entry: Entry) -> None:
    """Send one appended entry to every connected compliance officer, on every worker."""
    socketio.emit(EVENT, feed_payload(entry), namespace=NAMESPACE, to=ROOM)
