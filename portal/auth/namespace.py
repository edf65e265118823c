"""The one shape of a Socket.IO namespace for signed-in people (Flask-SocketIO's class-based namespaces).

``SignedInNamespace`` gives every namespace the same rules:

* connecting needs a live sign-in session (the session cookie), and every attempt is audited;
  subclasses decide who may connect in ``admit`` and set themselves up in ``connected``;
* each connection is registered against its session, so ending the session cuts it on any worker;
* every event handler ``on_<event>(self, user, payload) -> dict`` is answered ``{"ok": True, ...}`` or,
  for any refusal, ``{"ok": False, "error": {code, message}}`` plus an ``error`` event, never a silent drop;
* the database session is released after every event.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import g, request
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, Namespace, disconnect, emit

from portal.access import record
from portal.actions import Action
from portal.auth import sockets
from portal.auth.sessions import current_login
from portal.db import db_session
from portal.exceptions import AccessDenied, AuditUnavailable, PortalError
from portal.models import User

log = logging.getLogger(__name__)

Handler = Callable[[User, dict], dict]


class SignedInNamespace(Namespace):
    #: The action an anonymous connection attempt is audited as.
    connect_action: Action = Action.CHAT_CONNECT
    #: Events a person causes; all others are the browser's own doing and must not keep a session from idling out.
    active_events: frozenset[str] = frozenset()
    #: What a concealed refusal (AccessDenied with conceal) says.
    concealed_message = "There is no such record."

    # --- hooks for subclasses -----------------------------------------------------------------

    def admit(self, user: User) -> None:
        """Decide (and audit) whether this signed-in user may connect; raise AccessDenied to refuse."""
        record(self.connect_action, "allowed")

    def connected(self, user: User) -> None:
        """Set up a connection that was admitted and registered (rooms, counters, first events)."""

    def disconnected(self, sid: str) -> None:
        """Undo ``connected`` for a connection that closed."""

    def refused(self, exc: AccessDenied) -> None:
        """React to an event refused by the access policy (e.g. leave the room it was about)."""

    # --- connection ---------------------------------------------------------------------------

    def on_connect(self, auth: Any = None) -> None:
        g.passive_activity = True  # (re)connecting is the browser's doing, not the person's
        try:
            if not current_user.is_authenticated:
                reason = g.get("session_end_reason") or "unauthenticated"
                record(self.connect_action, "denied", reason=reason)
                raise ConnectionRefusedError(reason)
            user = current_user._get_current_object()
            self.admit(user)
            sockets.register(request.sid, current_login().id, self.namespace)
            self.connected(user)
        except AccessDenied as exc:
            raise ConnectionRefusedError(exc.message) from None
        except AuditUnavailable as exc:
            raise ConnectionRefusedError("audit_unavailable") from exc
        finally:
            db_session.remove()

    def on_disconnect(self, reason: Any = None) -> None:
        try:
            self.disconnected(request.sid)
            sockets.forget(request.sid)
        finally:
            db_session.remove()

    # --- events -------------------------------------------------------------------------------

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        handler = getattr(self, f"on_{event}", None)
        if handler is None:
            return None
        return self.socketio._handle_event(functools.partial(self._answer, event, handler), event, self.namespace,
                                           *args)

    def _answer(self, event: str, handler: Handler, payload: Any = None, *_extra: Any) -> dict[str, Any]:
        g.passive_activity = event not in self.active_events  # read before current_user loads the session
        try:
            if not current_user.is_authenticated:
                return self._session_ended()
            if not isinstance(payload, dict):
                return self.refusal("bad_request", "The event payload must be an object.")
            return {"ok": True, **handler(current_user._get_current_object(), payload)}
        except AccessDenied as exc:
            self.refused(exc)
            return self.refusal(exc.code, self.concealed_message if exc.conceal else exc.message, payload)
        except AuditUnavailable:
            return self.refusal("audit_unavailable", "The audit log cannot be written right now; nothing was done.",
                                payload)
        except PortalError as exc:
            return self.refusal(exc.code, exc.message, payload)
        except Exception as exc:  # noqa: BLE001 - the client must hear about every failure
            log.exception("socket event failed", extra={"event": event, "error": type(exc).__name__})
            return self.refusal("internal", "Something went wrong; nothing was changed. Try again.", payload)
        finally:
            db_session.remove()

    def refusal(self, code: str, message: str, payload: Any = None) -> dict[str, Any]:
        """Tell the client why, as an ``error`` event and in the acknowledgement."""
        error = {"code": code, "message": message}
        conversation_id = payload.get("conversation_id") if isinstance(payload, dict) else None
        if isinstance(conversation_id, str) and len(conversation_id) <= 64:
            error["conversation_id"] = conversation_id
        emit("error", error)
        return {"ok": False, "error": error}

    def _session_ended(self) -> dict[str, Any]:
        reason = g.get("session_end_reason") or "unauthenticated"
        message = "Your session ended after inactivity." if reason == "idle_timeout" else "Sign in again."
        emit("session_ended", {"reason": reason, "message": message})
        refusal = self.refusal(reason, message)
        disconnect()
        return refusal
