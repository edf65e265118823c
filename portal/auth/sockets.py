"""Which Socket.IO connections belong to which sign-in session, so ending a session cuts them.

Connections are recorded in the database rather than in worker memory because the session may be
ended by any worker (a back-channel logout, a revocation) while its sockets live on another.
``socketio.server.disconnect`` relays through the message queue to the worker that holds the
socket; the ``session_ended`` event goes the same way first, so the page can say why.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa

from portal.auth.sessions import SIGNED_OUT_MESSAGES
from portal.db import db_session
from portal.extensions import socketio
from portal.models import SocketConnection

log = logging.getLogger(__name__)



def register(sid: str, login_session_id: str, namespace: str) -> None:
    db_session.add(SocketConnection(sid=sid, login_session_id=login_session_id, namespace=namespace))
    db_session.commit()


def forget(sid: str) -> None:
    db_session.execute(sa.delete(SocketConnection).where(SocketConnection.sid == sid))
    db_session.commit()


def disconnect_sessions(login_session_ids: list[str], reason: str) -> int:
    """Tell every open connection of these sessions why, then disconnect it (on whichever worker)."""
    rows = db_session.execute(
        sa.select(SocketConnection.sid, SocketConnection.namespace)
        .where(SocketConnection.login_session_id.in_(login_session_ids))
    ).all()
    payload = {"reason": reason, "message": SIGNED_OUT_MESSAGES.get(reason, "Your session ended.")}
    for sid, namespace in rows:
        try:
            socketio.emit("session_ended", payload, to=sid, namespace=namespace)
            socketio.server.disconnect(sid, namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - the session is already ended; every later event is refused
            log.warning("socket disconnect failed", extra={"error": type(exc).__name__})
    db_session.execute(sa.delete(SocketConnection).where(SocketConnection.login_session_id.in_(login_session_ids)))
    db_session.commit()
    return len(rows)
