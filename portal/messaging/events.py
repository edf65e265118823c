"""The ``/chat`` Socket.IO namespace: thin handlers over ``portal.messaging.service``.

A ``SignedInNamespace`` (``portal.auth.namespace``): connecting needs a live session and is audited,
and every refusal reaches the client as ``{code, message}``: in the ack (``{"ok": false, "error": {...}}``)
and as an ``error`` event, never as a silent drop. Every event is checked again (a clinician removed
from a care team loses the room on their next event, not only at join).

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

import logging
import threading
from collections import defaultdict

from flask import request
from flask_socketio import emit, join_room, leave_room
from limits import parse as parse_limit

from portal import policy, services
from portal.access import authorize, record, role_label
from portal.actions import Action
from portal.auth.namespace import SignedInNamespace
from portal.crypto import new_id
from portal.db import db_session
from portal.exceptions import AccessDenied, MessagingError
from portal.extensions import socketio
from portal.messaging import service
from portal.models import Conversation, User
from portal.observability import MESSAGES, SOCKET_CONNECTIONS

log = logging.getLogger(__name__)

NAMESPACE = "/chat"
PRESENCE_STATES = ("online", "away")


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


presence = PresenceRegistry()


class ChatNamespace(SignedInNamespace):
    connect_action = Action.CHAT_CONNECT
    # Joins, history catch-up, read receipts and presence answers are sent by the browser on its own.
    active_events = frozenset({"send", "typing"})
    concealed_message = "There is no such conversation."

    # --- connection ---------------------------------------------------------------------------

    def connected(self, user: User) -> None:
        summaries = service.list_conversations(user)
        join_room(user_room(user.id))
        presence.connect(request.sid, user.id)  # only once nothing else can fail: disconnect undoes it
        SOCKET_CONNECTIONS.inc()
        emit("unread", {"conversations": {s.id: s.unread for s in summaries},
                        "total": sum(s.unread for s in summaries)})

    def disconnected(self, sid: str) -> None:
        user_id, gone = presence.disconnect(sid)
        if user_id is None:
            return
        SOCKET_CONNECTIONS.dec()
        user = service.get_user(user_id)
        for conversation_id in gone:
            if user is not None:
                socketio.emit("presence", {"conversation_id": conversation_id, "user": _person(user), "state": "offline",
                                           "announce": False}, to=conversation_room(conversation_id), namespace=NAMESPACE)

    def refused(self, exc: AccessDenied) -> None:
        """A refused member (e.g. removed from the care team) stops receiving the conversation at once."""
        resource = exc.resource
        if isinstance(resource, Conversation) and presence.joined(request.sid, resource.id):
            leave_room(conversation_room(resource.id))
            presence.leave(request.sid, resource.id)

    # --- conversation events ------------------------------------------------------------------

    def on_join(self, user: User, payload: dict) -> dict:
        conversation = _authorized(payload, Action.CONVERSATION_JOIN)
        join_room(conversation_room(conversation.id))
        presence.join(request.sid, conversation.id)
        _emit_presence(conversation.id, user, "online", announce=True)
        members = [service.get_user(uid) for uid in service.member_ids(conversation)]
        return {"conversation": service.summarize(conversation, user).as_dict(), "last_seq": conversation.last_seq,
                "presence": presence.snapshot(conversation.id), "reads": service.read_positions(conversation.id),
                "members": [_person(m) for m in members if m is not None]}

    def on_leave(self, user: User, payload: dict) -> dict:
        conversation_id = service.parse_uuid(_conversation_id(payload))
        if conversation_id and presence.joined(request.sid, conversation_id):
            leave_room(conversation_room(conversation_id))
            if presence.leave(request.sid, conversation_id):
                _emit_presence(conversation_id, user, "offline", announce=False)
        return {"conversation_id": conversation_id}

    def on_send(self, user: User, payload: dict) -> dict:
        settings = services.settings()
        key = service.validate_idempotency_key(payload.get("idempotency_key"))
        _conversation_id(payload)
        earlier = service.find_sent(user.id, key)
        if earlier is None and not services.rate_limits().hit(
                parse_limit(f"{settings.message_rate_per_minute}/minute"), "chat.send", user.id):
            raise MessagingError("rate_limited",
                                 f"You can send at most {settings.message_rate_per_minute} messages a minute. "
                                 "Wait a moment.")
        # After the rate limit: a flood of malformed bodies is slowed like any other.
        body = service.validate_body(payload.get("body"), settings.message_max_bytes)
        message_id = earlier.id if earlier is not None else new_id()
        conversation = _authorized(payload, Action.CONVERSATION_SEND,
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

    def on_history(self, user: User, payload: dict) -> dict:
        after_seq = service.validate_seq(payload.get("after_seq", 0), "after_seq")
        page_max = services.settings().history_page_max
        limit = service.validate_seq(payload.get("limit", page_max), "limit")
        limit = max(1, min(limit, page_max))
        conversation = _authorized(payload, Action.CONVERSATION_HISTORY, details={"after_seq": after_seq, "limit": limit})
        messages = service.history(conversation.id, after_seq, limit)
        names = service.sender_names(messages)
        return {"conversation_id": conversation.id, "messages": [service.message_dict(m, names) for m in messages],
                "last_seq": max(conversation.last_seq, messages[-1].seq if messages else 0),
                "has_more": len(messages) == limit}

    def on_typing(self, user: User, payload: dict) -> dict:
        conversation = _checked(user, payload, Action.CONVERSATION_SEND)
        emit("typing", {"conversation_id": conversation.id, "user": _person(user)},
             to=conversation_room(conversation.id), include_self=False)
        return {}

    def on_read(self, user: User, payload: dict) -> dict:
        seq = service.validate_seq(payload.get("seq"), "seq")
        conversation = _authorized(payload, Action.CONVERSATION_READ, details={"seq": seq})
        position = service.mark_read(conversation, user.id, seq)
        emit("read", {"conversation_id": conversation.id, "user": _person(user), "seq": position},
             to=conversation_room(conversation.id))
        emit("unread", {"conversation_id": conversation.id, "unread": max(0, conversation.last_seq - position)},
             to=user_room(user.id))
        return {"conversation_id": conversation.id, "seq": position}

    def on_presence(self, user: User, payload: dict) -> dict:
        state = payload.get("state")
        if state not in PRESENCE_STATES:
            raise MessagingError("bad_request", "state must be online or away.")
        conversation = _checked(user, payload, Action.CONVERSATION_JOIN)
        if not presence.set_state(request.sid, conversation.id, state):
            raise MessagingError("bad_request", "Join the conversation first.")
        _emit_presence(conversation.id, user, state, announce=False)
        return {"conversation_id": conversation.id, "state": state}


socketio.on_namespace(ChatNamespace(NAMESPACE))


def _conversation_id(payload: dict) -> str:
    value = payload.get("conversation_id")
    if not isinstance(value, str) or not value:
        raise MessagingError("bad_request", "conversation_id is required.")
    return value


def _authorized(payload: dict, action: Action, details: dict | None = None) -> Conversation:
    """The payload's conversation after ``authorize`` (audited); unknown ids are audited and refused."""
    raw_id = _conversation_id(payload)
    conversation = service.get_conversation(service.parse_uuid(raw_id))
    if conversation is None:
        authorize(action, None, details={**(details or {}), "conversation_id": raw_id[:64]})
    authorize(action, conversation, details=details)
    return conversation


def _checked(user: User, payload: dict, action: Action) -> Conversation:
    """Like ``_authorized`` but audits only refusals (for typing and presence, which show no content)."""
    conversation = service.get_conversation(service.parse_uuid(_conversation_id(payload)))
    if conversation is None or not policy.can(user, action, conversation).allowed:
        return _authorized(payload, action)  # audits the refusal and raises AccessDenied
    return conversation


def _person(user: User) -> dict[str, str]:
    return {"id": user.id, "name": user.display_name or "Unknown"}


def _emit_presence(conversation_id: str, user: User, state: str, announce: bool, include_self: bool = False) -> None:
    emit("presence", {"conversation_id": conversation_id, "user": _person(user), "state": state, "announce": announce},
         to=conversation_room(conversation_id), include_self=include_self)


def _deliver(conversation: Conversation, sender: User, message: dict, seq: int) -> None:
    """After the commit: broadcast, mark the sender's own message read, and update members' unread counts."""
    _evict_revoked_listeners(conversation)
    emit("message", message, to=conversation_room(conversation.id))
    position = service.mark_read(conversation, sender.id, seq)
    emit("unread", {"conversation_id": conversation.id, "unread": max(0, conversation.last_seq - position)},
         to=user_room(sender.id))
    _notify_members(conversation, sender, message)


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
            allowed[user_id] = user is not None and policy.can(user, Action.CONVERSATION_JOIN, conversation).allowed
            if not allowed[user_id]:
                record(Action.CONVERSATION_JOIN, "denied", reason="membership revoked", actor_id=user_id,
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
