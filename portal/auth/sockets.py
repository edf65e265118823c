"""Which Socket.IO connections belong to which sign-in session, so ending a session cuts them.

Connections are recorded in the database rather than in worker memory because the session may be
ended by any worker (a back-channel logout, a revocation) while its sockets live on another.
``socketio.server.disconnect`` relays through the message queue to the worker that holds the
socket; the ``session_ended`` event goes the same way first, so the page can say why.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Flask

from portal.auth.sessions import SIGNED_OUT_MESSAGES, end_timed_out, expiry_reason
from portal.db import db_session
from portal.extensions import socketio
from portal.models import LoginSession, SocketConnection
from portal.signals import sessions_ended

log = logging.getLogger(__name__)

ABANDONED = timedelta(hours=1)


def register(sid: str, login_session_id: str, namespace: str) -> None:
    db_session.add(SocketConnection(sid=sid, login_session_id=login_session_id, namespace=namespace))
    db_session.commit()


def forget(sid: str) -> None:
    db_session.execute(sa.delete(SocketConnection).where(SocketConnection.sid == sid))
    db_session.commit()


@sessions_ended.connect
def _cut_connections_of_ended_sessions(_sender: object, login_session_ids: list[str], reason: str) -> None:
    disconnect_sessions(login_session_ids, reason)


def disconnect_sessions(login_session_ids: list[str], reason: str) -> int:
    """Tell every open connection of these sessions why, then disconnect it (on whichever worker)."""
    rows = db_session.execute(
        sa.select(SocketConnection.sid, SocketConnection.namespace)
        .where(SocketConnection.login_session_id.in_(login_session_ids))
    ).all()
    for sid, namespace in rows:
        _cut(sid, namespace, reason)
    # The rows stay until the worker holding the socket sees it close (forget): should the relayed
    # disconnect be lost (a Redis hiccup), that worker's watch finds the ended session and cuts it.
    return len(rows)


def disconnect_expired() -> int:
    """Cut this worker's connections whose session ended or timed out (idle or too old) since they connected.

    Without this, a page left open past the idle time-out would keep receiving room broadcasts until
    its next event.
    """
    forget_abandoned()
    rows = db_session.execute(
        sa.select(SocketConnection.sid, SocketConnection.namespace, SocketConnection.login_session_id)).all()
    local = [(sid, namespace, login_id) for sid, namespace, login_id in rows
             if socketio.server.manager.is_connected(sid, namespace)]
    if not local:
        return 0
    logins = {login.id: login for login in db_session.scalars(
        sa.select(LoginSession).where(LoginSession.id.in_({login_id for _, _, login_id in local})))}
    now = datetime.now(timezone.utc)
    cut = 0
    for sid, namespace, login_id in local:
        login = logins.get(login_id)
        reason = expiry_reason(login, now) if login is not None else "signed_out"
        if reason is None:
            continue
        if login is not None and login.ended_at is None:
            end_timed_out(login, reason, from_request=False)
        _cut(sid, namespace, reason)
        cut += 1
    return cut


def forget_abandoned() -> None:
    """Rows of sessions that ended long ago: their worker is gone (a crash) or has cut them long since."""
    ended_long_ago = sa.select(LoginSession.id).where(LoginSession.ended_at < datetime.now(timezone.utc) - ABANDONED)
    db_session.execute(sa.delete(SocketConnection).where(SocketConnection.login_session_id.in_(ended_long_ago)))
    db_session.commit()


def _cut(sid: str, namespace: str, reason: str) -> None:
    try:
        socketio.emit("session_ended", {"reason": reason, "message": SIGNED_OUT_MESSAGES.get(reason, "Your session ended.")},
                      to=sid, namespace=namespace)
        socketio.server.disconnect(sid, namespace=namespace)
    except Exception as exc:  # noqa: BLE001 - the session is already ended; every later event is refused
        log.warning("socket disconnect failed", extra={"error": type(exc).__name__})


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
