"""The ``/chat`` Socket.IO namespace: thin handlers over ``portal.messaging.service``.

Every event is checked again (a clinician removed from a care team loses the room on their next
event, not only at join) and every refusal reaches the client as ``{code, message}``: in the ack
(``{"ok": false, "error": {...}}``) and as an ``error`` event, never as a silent drop.

Rooms: ``conv:<conversation id>`` for a conversation's joined clients, ``user:<user id>`` for every
connection of a user (unread counts, a patient's live replies). With ``PORTAL_MESSAGE_QUEUE`` set,
Flask-SocketIO relays room emits through Redis so several workers deliver to each other's clients.

Presence is kept per worker for that worker's connections and shared by events, so it works the
same with one process or many: joining broadcasts ``presence`` ``{state: "online", announce: true}``;
clients that see an announcement answer with their own state (``presence`` event, not announced),
so a joiner learns who is there on any worker; leaving or disconnecting broadcasts ``offline`` when the
user has no other connection in the room on this worker, and a tab of that user still in the room
(on any worker) answers ``offline`` about itself by re-announcing.

Rate limit: a per-user moving window of ``message_rate_per_minute`` sends, counted by the ``limits``
library (Flask-Limiter's engine) in ``PORTAL_RATELIMIT_STORAGE_URL``: with Redis there, the limit holds
across every worker.

Audit: ``chat.connect`` (allowed or denied), ``conversation.join``, ``conversation.send`` (message id,
never the body), ``conversation.history`` and ``conversation.read`` through ``authorize``. Typing and
presence updates are checked with the same policy decision but audited only when refused, so a
keystroke indicator does not flood the audit log.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from flask import g, request
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, disconnect, emit, join_room, leave_room
from limits import parse as parse_limit

from portal import policy, services
from portal.access import AccessDenied, AuditUnavailable, authorize, record, role_label
from portal.auth import sockets
from portal.auth.sessions import current_login
from portal.crypto import new_id
from portal.db import db_session
from portal.extensions import socketio
from portal.messaging import service
from portal.messaging.service import MessagingError
from portal.models import Conversation, User
from portal.observability import MESSAGES, SOCKET_CONNECTIONS

log = logging.getLogger(__name__)

NAMESPACE = "/chat"
PRESENCE_STATES = ("online", "away")
# Events a person causes. Joins, history catch-up, read receipts and presence answers are sent by the
# browser on its own, so they must not keep an unattended session from idling out.
ACTIVE_EVENTS = frozenset({"send", "typing"})


def conversation_room(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


class PresenceRegistry:
    """This worker's connections: who is connected, which conversations each joined, and their state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}  # sid -> user id
        self._rooms: dict[str, dict[str, str]] = defaultdict(dict)  # conversation id -> {sid: state}

    def connect(self, sid: str, user_id: str) -> None:
        with self._lock:
            self._users[sid] = user_id

    def sids(self) -> list[str]:
        with self._lock:
            return list(self._users)

    def join(self, sid: str, conversation_id: str) -> None:
        with self._lock:
            self._rooms[conversation_id][sid] = "online"

    def set_state(self, sid: str, conversation_id: str, state: str) -> bool:
        with self._lock:
            room = self._rooms.get(conversation_id, {})
            if sid not in room:
                return False
            room[sid] = state
            return True

    def joined(self, sid: str, conversation_id: str) -> bool:
        with self._lock:
            return sid in self._rooms.get(conversation_id, {})

    def leave(self, sid: str, conversation_id: str) -> bool:
        """Forget ``sid`` in the conversation; True when its user has no other connection there."""
        with self._lock:
            room = self._rooms.get(conversation_id, {})
            if room.pop(sid, None) is None:
                return False
            user_id = self._users.get(sid)
            still_here = any(self._users.get(other) == user_id for other in room)
            if not room:
                self._rooms.pop(conversation_id, None)
            return not still_here

    def disconnect(self, sid: str) -> tuple[str | None, list[str]]:
        """Forget ``sid``; return its user and the conversations where that user is now gone."""
        with self._lock:
            conversation_ids = [cid for cid, room in self._rooms.items() if sid in room]
        gone = [cid for cid in conversation_ids if self.leave(sid, cid)]
        with self._lock:
            return self._users.pop(sid, None), gone

    def snapshot(self, conversation_id: str) -> dict[str, str]:
        """user id -> "online" when any of its connections here is online, else "away"."""
        with self._lock:
            states: dict[str, str] = {}
            for sid, state in self._rooms.get(conversation_id, {}).items():
                user_id = self._users.get(sid)
                if user_id and states.get(user_id) != "online":
                    states[user_id] = state
            return states

    def members(self, conversation_id: str) -> dict[str, str]:
        """sid -> user id of this worker's connections joined to the conversation."""
        with self._lock:
            return {sid: self._users[sid] for sid in self._rooms.get(conversation_id, {}) if sid in self._users}

    def clear(self) -> None:
        with self._lock:
            self._users.clear()
            self._rooms.clear()


presence = PresenceRegistry()


# --- plumbing -----------------------------------------------------------------------------------

def _refusal(code: str, message: str, payload: Any = None) -> dict[str, Any]:
    error = {"code": code, "message": message}
    conversation_id = payload.get("conversation_id") if isinstance(payload, dict) else None
    if isinstance(conversation_id, str) and len(conversation_id) <= 64:
        error["conversation_id"] = conversation_id
    emit("error", error)
    return {"ok": False, "error": error}


def _session_ended() -> dict[str, Any]:
    reason = g.get("session_end_reason") or "unauthenticated"
    message = "Your session ended after inactivity." if reason == "idle_timeout" else "Sign in again."
    emit("session_ended", {"reason": reason, "message": message})
    refusal = _refusal(reason, message)
    disconnect()
    return refusal


def chat_event(name: str) -> Callable[[Callable[[User, dict], dict]], Callable]:
    """Register ``handler(user, payload) -> dict`` for event ``name``: checks the session, turns refusals
    into ``error`` acks and events, and releases the database session afterwards."""

    def decorator(handler: Callable[[User, dict], dict]) -> Callable:
        @functools.wraps(handler)
        def wrapper(payload: Any = None, *_extra: Any) -> dict[str, Any]:
            g.passive_activity = name not in ACTIVE_EVENTS  # read before current_user loads the session
            try:
                if not current_user.is_authenticated:
                    return _session_ended()
                if not isinstance(payload, dict):
                    return _refusal("bad_request", "The event payload must be an object.")
                return {"ok": True, **handler(current_user._get_current_object(), payload)}
            except MessagingError as exc:
                return _refusal(exc.code, exc.message, payload)
            except AccessDenied as exc:
                _drop_from_room(exc.resource)
                if exc.decision.conceal:
                    return _refusal("not_found", "There is no such conversation.", payload)
                return _refusal("forbidden", f"Access refused: {exc.decision.reason}.", payload)
            except AuditUnavailable:
                return _refusal("audit_unavailable", "The audit log cannot be written right now; nothing was done.",
                                payload)
            except Exception as exc:  # noqa: BLE001 - the client must hear about every failure
                log.exception("chat event failed", extra={"event": name, "error": type(exc).__name__})
                return _refusal("internal", "Something went wrong; nothing was changed. Try again.", payload)
            finally:
                db_session.remove()

        socketio.on_event(name, wrapper, namespace=NAMESPACE)
        return wrapper

    return decorator


def _conversation_id(payload: dict) -> str:
    value = payload.get("conversation_id")
    if not isinstance(value, str) or not value:
        raise MessagingError("bad_request", "conversation_id is required.")
    return value


def _authorized(payload: dict, action: str, details: dict | None = None) -> Conversation:
    """The payload's conversation after ``authorize`` (audited); unknown ids are audited and refused."""
    raw_id = _conversation_id(payload)
    conversation = service.get_conversation(service.parse_uuid(raw_id))
    if conversation is None:
        authorize(action, None, details={**(details or {}), "conversation_id": raw_id[:64]})
    authorize(action, conversation, details=details)
    return conversation


def _checked(user: User, payload: dict, action: str) -> Conversation:
    """Like ``_authorized`` but audits only refusals (for typing and presence, which show no content)."""
    conversation = service.get_conversation(service.parse_uuid(_conversation_id(payload)))
    if conversation is None or not policy.can(user, action, conversation).allowed:
        return _authorized(payload, action)  # audits the refusal and raises AccessDenied
    return conversation


def _drop_from_room(resource: object) -> None:
    """A refused member (e.g. removed from the care team) stops receiving the conversation at once."""
    if isinstance(resource, Conversation) and presence.joined(request.sid, resource.id):
        leave_room(conversation_room(resource.id))
        presence.leave(request.sid, resource.id)


def _person(user: User) -> dict[str, str]:
    return {"id": user.id, "name": user.display_name or "Unknown"}


def _emit_presence(conversation_id: str, user: User, state: str, announce: bool, include_self: bool = False) -> None:
    emit("presence", {"conversation_id": conversation_id, "user": _person(user), "state": state, "announce": announce},
         to=conversation_room(conversation_id), include_self=include_self)


# --- connection -----------------------------------------------------------------------------------

@socketio.on("connect", namespace=NAMESPACE)
def on_connect(auth: Any = None) -> None:
    g.passive_activity = True  # (re)connecting is the browser's doing, not the person's
    try:
        if not current_user.is_authenticated:
            reason = g.get("session_end_reason") or "unauthenticated"
            record("chat.connect", "denied", reason=reason)
            raise ConnectionRefusedError(reason)
        record("chat.connect", "allowed")
        user = current_user._get_current_object()
        summaries = service.list_conversations(user)
        join_room(user_room(user.id))
        sockets.register(request.sid, current_login().id, NAMESPACE)
        presence.connect(request.sid, user.id)  # only once nothing else can fail: disconnect undoes it
        SOCKET_CONNECTIONS.inc()
        emit("unread", {"conversations": {s.id: s.unread for s in summaries},
                        "total": sum(s.unread for s in summaries)})
    except AuditUnavailable as exc:
        raise ConnectionRefusedError("audit_unavailable") from exc
    finally:
        db_session.remove()


@socketio.on("disconnect", namespace=NAMESPACE)
def on_disconnect(reason: Any = None) -> None:
    user_id, gone = presence.disconnect(request.sid)
    if user_id is None:
        return
    SOCKET_CONNECTIONS.dec()
    try:
        sockets.forget(request.sid)
        user = service.get_user(user_id)
        for conversation_id in gone:
            if user is not None:
                socketio.emit("presence", {"conversation_id": conversation_id, "user": _person(user), "state": "offline",
                                           "announce": False}, to=conversation_room(conversation_id), namespace=NAMESPACE)
    finally:
        db_session.remove()


# --- conversation events --------------------------------------------------------------------------

@chat_event("join")
def on_join(user: User, payload: dict) -> dict:
    conversation = _authorized(payload, "conversation.join")
    join_room(conversation_room(conversation.id))
    presence.join(request.sid, conversation.id)
    _emit_presence(conversation.id, user, "online", announce=True)
    members = [service.get_user(uid) for uid in service.member_ids(conversation)]
    return {"conversation": service.summarize(conversation, user).as_dict(), "last_seq": conversation.last_seq,
            "presence": presence.snapshot(conversation.id), "reads": service.read_positions(conversation.id),
            "members": [_person(m) for m in members if m is not None]}


@chat_event("leave")
def on_leave(user: User, payload: dict) -> dict:
    conversation_id = service.parse_uuid(_conversation_id(payload))
    if conversation_id and presence.joined(request.sid, conversation_id):
        leave_room(conversation_room(conversation_id))
        if presence.leave(request.sid, conversation_id):
            _emit_presence(conversation_id, user, "offline", announce=False)
    return {"conversation_id": conversation_id}


@chat_event("send")
def on_send(user: User, payload: dict) -> dict:
    settings = services.settings()
    key = service.validate_idempotency_key(payload.get("idempotency_key"))
    _conversation_id(payload)
    earlier = service.find_sent(user.id, key)
    if earlier is None and not services.rate_limits().hit(
            parse_limit(f"{settings.message_rate_per_minute}/minute"), "chat.send", user.id):
        raise MessagingError("rate_limited",
                             f"You can send at most {settings.message_rate_per_minute} messages a minute. Wait a moment.")
    # After the rate limit: a flood of malformed bodies is slowed like any other.
    body = service.validate_body(payload.get("body"), settings.message_max_bytes)
    message_id = earlier.id if earlier is not None else new_id()
    conversation = _authorized(payload, "conversation.send",
                               details={"message_id": message_id, "replay": earlier is not None})
    stored = service.store_message(conversation.id, user.id, body, key, message_id)
    message = service.message_dict(stored.message, {user.id: user.display_name or "Unknown"})
    if not stored.duplicate:  # a retry is answered with the original and never broadcast twice
        MESSAGES.inc()
        try:
            _deliver(conversation, user, message, stored.message.seq)
        except Exception as exc:  # noqa: BLE001 - stored is stored: the sender must hear it was
            db_session.rollback()
            log.error("delivery after commit failed", extra={"event": "send", "error": type(exc).__name__})
    return {"message": message, "duplicate": stored.duplicate}


def _deliver(conversation: Conversation, sender: User, message: dict, seq: int) -> None:
    """After the commit: broadcast, mark the sender's own message read, and update members' unread counts."""
    _evict_revoked_listeners(conversation)
    emit("message", message, to=conversation_room(conversation.id))
    position = service.mark_read(conversation, sender.id, seq)
    emit("unread", {"conversation_id": conversation.id, "unread": max(0, conversation.last_seq - position)},
         to=user_room(sender.id))
    _notify_members(conversation, sender, message)


@chat_event("history")
def on_history(user: User, payload: dict) -> dict:
    after_seq = service.validate_seq(payload.get("after_seq", 0), "after_seq")
    page_max = services.settings().history_page_max
    limit = service.validate_seq(payload.get("limit", page_max), "limit")
    limit = max(1, min(limit, page_max))
    conversation = _authorized(payload, "conversation.history", details={"after_seq": after_seq, "limit": limit})
    messages = service.history(conversation.id, after_seq, limit)
    names = service.sender_names(messages)
    return {"conversation_id": conversation.id, "messages": [service.message_dict(m, names) for m in messages],
            "last_seq": max(conversation.last_seq, messages[-1].seq if messages else 0),
            "has_more": len(messages) == limit}


@chat_event("typing")
def on_typing(user: User, payload: dict) -> dict:
    conversation = _checked(user, payload, "conversation.send")
    emit("typing", {"conversation_id": conversation.id, "user": _person(user)},
         to=conversation_room(conversation.id), include_self=False)
    return {}


@chat_event("read")
def on_read(user: User, payload: dict) -> dict:
    seq = service.validate_seq(payload.get("seq"), "seq")
    conversation = _authorized(payload, "conversation.read", details={"seq": seq})
    position = service.mark_read(conversation, user.id, seq)
    emit("read", {"conversation_id": conversation.id, "user": _person(user), "seq": position},
         to=conversation_room(conversation.id))
    emit("unread", {"conversation_id": conversation.id, "unread": max(0, conversation.last_seq - position)},
         to=user_room(user.id))
    return {"conversation_id": conversation.id, "seq": position}


@chat_event("presence")
def on_presence(user: User, payload: dict) -> dict:
    state = payload.get("state")
    if state not in PRESENCE_STATES:
        raise MessagingError("bad_request", "state must be online or away.")
    conversation = _checked(user, payload, "conversation.join")
    if not presence.set_state(request.sid, conversation.id, state):
        raise MessagingError("bad_request", "Join the conversation first.")
    _emit_presence(conversation.id, user, state, announce=False)
    return {"conversation_id": conversation.id, "state": state}


# --- fan-out ---------------------------------------------------------------------------------------

def _notify_members(conversation: Conversation, sender: User, message: dict) -> None:
    """Unread counts to every other member's user room; a patient's thread also pushes the reply."""
    positions = service.read_positions(conversation.id)  # one query for every member's read position
    for user_id in service.member_ids(conversation):
        if user_id == sender.id:
            continue
        unread = max(0, conversation.last_seq - positions.get(user_id, 0))
        emit("unread", {"conversation_id": conversation.id, "unread": unread}, to=user_room(user_id))
    if conversation.kind == "patient" and sender.patient_id != conversation.patient_id:
        for user_id in service.patient_user_ids(conversation.patient_id):
            emit("reply", message, to=user_room(user_id))


def _evict_revoked_listeners(conversation: Conversation) -> None:
    """Drop this worker's connections in the room whose user is no longer allowed in (e.g. left the care team)."""
    members = presence.members(conversation.id)
    allowed: dict[str, bool] = {}
    for sid, user_id in members.items():
        if user_id not in allowed:
            user = service.get_user(user_id)
            allowed[user_id] = user is not None and policy.can(user, "conversation.join", conversation).allowed
            if not allowed[user_id]:
                record("conversation.join", "denied", reason="membership revoked", actor_id=user_id,
                       actor_role=role_label(user), resource_type="conversation",
                       resource_id=conversation.id, patient_id=conversation.patient_id, from_request=False)
        if not allowed[user_id]:
            socketio.server.leave_room(sid, conversation_room(conversation.id), namespace=NAMESPACE)
            presence.leave(sid, conversation.id)
            socketio.emit("error", {"code": "forbidden", "message": "You are no longer a member of this conversation.",
                                    "conversation_id": conversation.id}, to=sid, namespace=NAMESPACE)


# --- shutdown -------------------------------------------------------------------------------------

def announce_shutdown() -> None:
    """Tell this worker's /chat clients to reconnect (SIGTERM): only local clients, not the whole cluster.

    Only queues the notices, so it is safe from any greenlet; run.py lets them go out, then closes the
    connections and stops. Clients reconnect after a short random delay and catch up with ``history``.
    """
    if socketio.server is None:
        return
    for sid in presence.sids():
        try:
            socketio.emit("server_shutdown", {"reconnect": True}, to=sid, namespace=NAMESPACE, ignore_queue=True)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the others being told
            log.warning("shutdown notice failed", extra={"sid": sid})
