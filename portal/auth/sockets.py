"""Which Socket.IO connections belong to which sign-in session, so ending a session cuts them.

Connections are recorded in the database rather than in worker memory because the session may be
ended by any worker (a back-channel logout, a revocation) while its sockets live on another.
``socketio.server.disconnect`` relays through the message queue to the worker that holds the
socket; the ``session_ended`` event goes the same way first, so the page can say why.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask

from portal.auth.sessions import SIGNED_OUT_MESSAGES, expiry_reason
from portal.db import db_session
from portal.extensions import socketio
from portal.models import LoginSession, SocketConnection

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


def disconnect_expired() -> int:
    """Cut this worker's connections whose session timed out (idle or too old) since they connected.

    Without this, a page left open past the idle time-out would keep receiving room broadcasts until
    its next event. The session is marked ended once (whichever worker gets there first audits it).
    """
    from portal.access import record

    rows = db_session.execute(
        sa.select(SocketConnection.sid, SocketConnection.namespace, LoginSession)
        .join(LoginSession, LoginSession.id == SocketConnection.login_session_id)
    ).all()
    now = datetime.now(timezone.utc)
    cut = 0
    for sid, namespace, login in rows:
        reason = expiry_reason(login, now)
        if reason is None or not socketio.server.manager.is_connected(sid, namespace):
            continue
        claimed = db_session.execute(
            sa.update(LoginSession).where(LoginSession.id == login.id, LoginSession.ended_at.is_(None))
            .values(ended_at=now, end_reason=reason)
        ).rowcount
        db_session.commit()
        if claimed:
            record("signout." + reason, "allowed", actor_id=login.user_id, reason=reason,
                   actor_role=",".join(sorted(login.user.role_set)) or None, from_request=False)
        socketio.emit("session_ended", {"reason": reason, "message": SIGNED_OUT_MESSAGES.get(reason, "")},
                      to=sid, namespace=namespace)
        socketio.server.disconnect(sid, namespace=namespace)
        cut += 1
    return cut


def watch_session_expiry(app: Flask) -> None:
    """Background loop of each worker: cut connections of timed-out sessions a few times per idle period."""
    idle_seconds = app.extensions["portal.settings"].session_idle_minutes * 60
    interval = max(0.5, min(30.0, idle_seconds / 4))
    while True:
        socketio.sleep(interval)
        with app.app_context():
            try:
                disconnect_expired()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a database hiccup
                log.warning("session expiry watch failed", extra={"error": type(exc).__name__})
            finally:
                db_session.remove()
