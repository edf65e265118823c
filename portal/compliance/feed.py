"""The live audit feed: Socket.IO namespace /audit for compliance officers.

Every appended audit entry is published (identifiers only) to the room "audit-feed".
``socketio.emit`` goes through Flask-SocketIO's message queue when one is configured, so an
event recorded by any worker process (or a CLI command) reaches officers connected to any other.
"""
from __future__ import annotations

from flask_socketio import join_room

from audit import Entry
from audit.events import format_time
from portal.access import authorize
from portal.actions import Action
from portal.auth.namespace import SignedInNamespace
from portal.extensions import socketio
from portal.models import User
from portal.signals import audit_entry_appended

NAMESPACE = "/audit"
ROOM = "audit-feed"
EVENT = "audit_event"


class AuditFeedNamespace(SignedInNamespace):
    """Only compliance officers may listen; their connecting is itself audited. The feed has no events."""

    connect_action = Action.AUDIT_READ

    def admit(self, user: User) -> None:
        authorize(Action.AUDIT_READ, details={"feed": "connect"})

    def connected(self, user: User) -> None:
        join_room(ROOM)


socketio.on_namespace(AuditFeedNamespace(NAMESPACE))


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


@audit_entry_appended.connect
def publish(_sender: object, entry: Entry) -> None:
    """Send one appended entry to every connected compliance officer, on every worker."""
    socketio.emit(EVENT, feed_payload(entry), namespace=NAMESPACE, to=ROOM)
