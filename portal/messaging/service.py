"""The rules of messaging: who is in a conversation, how messages are stored, ordered and read.

Handlers (HTTP views and the ``/chat`` Socket.IO namespace) stay thin and call these functions after
``portal.access.authorize`` has decided and audited the access. Nothing here decides access.

Ordering: every message gets the next value of its conversation's ``last_seq``, allocated by one
``UPDATE conversation SET last_seq = last_seq + 1 ... RETURNING last_seq`` in the same transaction
as the insert. The row lock (PostgreSQL) or the database write lock (SQLite) serialises senders across
processes, and a failed insert rolls the increment back, so sequences have no gaps or duplicates.

Natural keys: ``conversation.direct_key`` is the conversation's unique natural key. Direct
conversations use the two clinicians' sorted user ids joined by ``:``; team and patient threads use
``team:<team id>`` and ``patient:<patient id>``, so concurrent lazy creation on several workers
cannot produce two threads for one team or patient.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from portal.crypto import new_id
from portal.db import db_session
from portal.exceptions import MessagingError
from portal.models import (
    CareTeam,
    CareTeamMember,
    CareTeamPatient,
    Conversation,
    ConversationMember,
    ConversationRead,
    Message,
    Patient,
    User,
)
from portal.models.columns import utcnow
from portal.validation import is_storable_text

IDEMPOTENCY_KEY_MAX = 64


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    kind: str
    title: str
    last_seq: int
    last_read_seq: int

    @property
    def unread(self) -> int:
        return max(0, self.last_seq - self.last_read_seq)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "last_seq": self.last_seq,
                "last_read_seq": self.last_read_seq, "unread": self.unread}


@dataclass(frozen=True)
class StoreResult:
    message: Message
    duplicate: bool


# --- validation -------------------------------------------------------------------------------

def parse_uuid(value: Any) -> str | None:
    """The canonical form of a UUID string, or None when ``value`` is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def validate_body(body: Any, max_bytes: int) -> str:
    if not isinstance(body, str):
        raise MessagingError("bad_request", "The message body must be text.")
    if not body.strip():
        raise MessagingError("empty", "The message is empty.")
    if not is_storable_text(body):
        raise MessagingError("bad_request", "The message holds characters that are not text (a broken character code).")
    if len(body.encode("utf-8")) > max_bytes:
        raise MessagingError("too_large", f"The message is longer than {max_bytes} bytes.")
    return body


def validate_idempotency_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise MessagingError("bad_request", f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters.")
    return key


def validate_seq(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MessagingError("bad_request", f"{name} must be a whole number of at least 0.")
    return value


# --- conversations ----------------------------------------------------------------------------

def get_conversation(conversation_id: str | None) -> Conversation | None:
    return db_session.get(Conversation, conversation_id) if conversation_id else None


def _get_or_create(key: str, **fields: Any) -> tuple[Conversation, bool]:
    """The conversation with natural key ``key``, created when absent (safe against concurrent creators)."""
    existing = db_session.scalars(sa.select(Conversation).where(Conversation.direct_key == key)).first()
    if existing is not None:
        return existing, False
    conversation = Conversation(id=new_id(), direct_key=key, last_seq=0, **fields)
    db_session.add(conversation)
    try:
        db_session.flush()
    except IntegrityError:
        db_session.rollback()
        return db_session.scalars(sa.select(Conversation).where(Conversation.direct_key == key)).one(), False
    return conversation, True


def direct_key(user_a: str, user_b: str) -> str:
    return ":".join(sorted((user_a, user_b)))


def get_or_create_direct(user: User, other: User) -> Conversation:
    if other.id == user.id:
        raise MessagingError("bad_request", "Choose another clinician.")
    if not other.has_role("clinician"):
        raise MessagingError("bad_request", "Direct conversations are between clinicians.")
    conversation, created = _get_or_create(direct_key(user.id, other.id), kind="direct")
    if created:
        db_session.add_all([ConversationMember(conversation_id=conversation.id, user_id=user.id),
                            ConversationMember(conversation_id=conversation.id, user_id=other.id)])
    db_session.commit()
    return conversation


def get_or_create_team(team_id: str) -> Conversation:
    conversation, _ = _get_or_create(f"team:{team_id}", kind="team", team_id=team_id)
    db_session.commit()
    return conversation


def get_or_create_patient_thread(patient_id: str) -> Conversation:
    conversation, _ = _get_or_create(f"patient:{patient_id}", kind="patient", patient_id=patient_id)
    db_session.commit()
    return conversation


def member_ids(conversation: Conversation) -> list[str]:
    """The user ids that may currently read ``conversation`` (the same rule as policy, as a list)."""
    if conversation.kind == "direct":
        query = sa.select(ConversationMember.user_id).where(ConversationMember.conversation_id == conversation.id)
    elif conversation.kind == "team":
        query = sa.select(CareTeamMember.user_id).where(CareTeamMember.team_id == conversation.team_id)
    else:
        clinicians = (sa.select(CareTeamMember.user_id)
                      .join(CareTeamPatient, CareTeamPatient.team_id == CareTeamMember.team_id)
                      .where(CareTeamPatient.patient_id == conversation.patient_id))
        patients = sa.select(User.id).where(User.patient_id == conversation.patient_id)
        query = sa.union(clinicians, patients)
    return sorted(set(db_session.scalars(query)))


def patient_user_ids(patient_id: str | None) -> list[str]:
    """The portal accounts linked to a patient's chart."""
    if not patient_id:
        return []
    return list(db_session.scalars(sa.select(User.id).where(User.patient_id == patient_id)))


def conversation_title(conversation: Conversation, viewer: User) -> str:
    if conversation.kind == "team":
        team = db_session.get(CareTeam, conversation.team_id)
        return f"{team.name} team" if team else "Care team"
    if conversation.kind == "patient":
        if viewer.patient_id and viewer.patient_id == conversation.patient_id:
            return "My care team"
        patient = db_session.get(Patient, conversation.patient_id)
        return f"Care thread · {patient.display_name}" if patient else "Care thread"
    other_id = next((uid for uid in member_ids(conversation) if uid != viewer.id), None)
    other = db_session.get(User, other_id) if other_id else None
    return (other.display_name or "Clinician") if other else "Direct conversation"


def read_position(conversation_id: str, user_id: str) -> int:
    return db_session.scalar(sa.select(ConversationRead.last_read_seq).where(
        ConversationRead.conversation_id == conversation_id, ConversationRead.user_id == user_id)) or 0


def summarize(conversation: Conversation, viewer: User) -> ConversationSummary:
    return ConversationSummary(conversation.id, conversation.kind, conversation_title(conversation, viewer),
                               conversation.last_seq, read_position(conversation.id, viewer.id))


def list_conversations(user: User) -> list[ConversationSummary]:
    """Every conversation ``user`` belongs to, creating their care teams' and own thread lazily."""
    conversations: dict[str, Conversation] = {}
    if user.has_role("clinician"):
        team_ids = db_session.scalars(sa.select(CareTeamMember.team_id).where(CareTeamMember.user_id == user.id)).all()
        for team_id in team_ids:
            conversation = get_or_create_team(team_id)
            conversations[conversation.id] = conversation
        direct = (sa.select(Conversation).join(ConversationMember, ConversationMember.conversation_id == Conversation.id)
                  .where(ConversationMember.user_id == user.id, Conversation.kind == "direct"))
        patient_threads = (sa.select(Conversation)
                           .join(CareTeamPatient, CareTeamPatient.patient_id == Conversation.patient_id)
                           .where(Conversation.kind == "patient",
                                  CareTeamPatient.team_id.in_(team_ids) if team_ids else sa.false()))
        for conversation in [*db_session.scalars(direct), *db_session.scalars(patient_threads)]:
            conversations[conversation.id] = conversation
    if user.has_role("patient") and user.patient_id:
        conversation = get_or_create_patient_thread(user.patient_id)
        conversations[conversation.id] = conversation
    summaries = [summarize(c, user) for c in conversations.values()]
    kind_order = {"patient": 0, "team": 1, "direct": 2}
    return sorted(summaries, key=lambda s: (kind_order.get(s.kind, 3), s.title.lower()))


def clinicians_except(user: User) -> list[User]:
    """Clinicians ``user`` can start a direct conversation with, by name."""
    candidates = db_session.scalars(sa.select(User).where(User.roles.like("%clinician%"), User.id != user.id))
    return sorted((u for u in candidates if u.has_role("clinician")), key=lambda u: (u.display_name or "").lower())


def get_user(user_id: str | None) -> User | None:
    return db_session.get(User, user_id) if user_id else None


# --- messages ---------------------------------------------------------------------------------

def find_sent(sender_id: str, idempotency_key: str) -> Message | None:
    return db_session.scalars(sa.select(Message).where(Message.sender_id == sender_id,
                                                       Message.idempotency_key == idempotency_key)).first()


def store_message(conversation_id: str, sender_id: str, body: str, idempotency_key: str,
                  message_id: str | None = None) -> StoreResult:
    """Commit one message with the conversation's next seq; a repeated idempotency key returns the original."""
    existing = find_sent(sender_id, idempotency_key)
    if existing is not None:
        return StoreResult(_same_conversation(existing, conversation_id), duplicate=True)
    db_session.commit()  # end any read transaction so the UPDATE starts a fresh write transaction
    try:
        seq = db_session.execute(
            sa.update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(last_seq=Conversation.last_seq + 1)
            .returning(Conversation.last_seq)
            .execution_options(synchronize_session=False)
        ).scalar_one()
        message = Message(id=message_id or new_id(), conversation_id=conversation_id, seq=seq, sender_id=sender_id,
                          idempotency_key=idempotency_key, body=body, created_at=utcnow())
        db_session.add(message)
        db_session.commit()
    except IntegrityError:
        # Another request stored the same idempotency key first: its message is the answer.
        db_session.rollback()
        existing = find_sent(sender_id, idempotency_key)
        if existing is None:
            raise
        return StoreResult(_same_conversation(existing, conversation_id), duplicate=True)
    except BaseException:
        db_session.rollback()
        raise
    conversation = db_session.get(Conversation, conversation_id)
    if conversation is not None:
        db_session.refresh(conversation, ["last_seq"])
    return StoreResult(message, duplicate=False)


def _same_conversation(message: Message, conversation_id: str) -> Message:
    if message.conversation_id != conversation_id:
        raise MessagingError("bad_request", "That idempotency key was already used for another conversation.")
    return message


def history(conversation_id: str, after_seq: int, limit: int) -> list[Message]:
    query = (sa.select(Message).where(Message.conversation_id == conversation_id, Message.seq > after_seq)
             .order_by(Message.seq).limit(limit))
    return list(db_session.scalars(query))


def mark_read(conversation: Conversation, user_id: str, seq: int) -> int:
    """Move the user's read position forward (never back, never past the last message); return it."""
    target = min(seq, conversation.last_seq)
    for _attempt in range(2):
        db_session.execute(
            sa.update(ConversationRead)
            .where(ConversationRead.conversation_id == conversation.id, ConversationRead.user_id == user_id,
                   ConversationRead.last_read_seq < target)
            .values(last_read_seq=target, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        current = db_session.scalar(sa.select(ConversationRead.last_read_seq).where(
            ConversationRead.conversation_id == conversation.id, ConversationRead.user_id == user_id))
        if current is not None:
            db_session.commit()
            return current
        db_session.add(ConversationRead(conversation_id=conversation.id, user_id=user_id, last_read_seq=target,
                                        updated_at=utcnow()))
        try:
            db_session.commit()
            return target
        except IntegrityError:  # another tab created the row first: move it forward instead
            db_session.rollback()
    raise MessagingError("conflict", "The read position could not be saved; try again.")


def read_positions(conversation_id: str) -> dict[str, int]:
    rows = db_session.execute(sa.select(ConversationRead.user_id, ConversationRead.last_read_seq)
                              .where(ConversationRead.conversation_id == conversation_id))
    return {user_id: seq for user_id, seq in rows}


def sender_names(messages: list[Message]) -> dict[str, str]:
    ids = {m.sender_id for m in messages}
    if not ids:
        return {}
    return {u.id: u.display_name or "Unknown" for u in db_session.scalars(sa.select(User).where(User.id.in_(ids)))}


def message_dict(message: Message, names: dict[str, str]) -> dict[str, Any]:
    """The wire form of a message: plain text body, server id, seq, sender and UTC time."""
    return {"id": message.id, "conversation_id": message.conversation_id, "seq": message.seq,
            "sender": {"id": message.sender_id, "name": names.get(message.sender_id, "Unknown")},
            "body": message.body, "idempotency_key": message.idempotency_key, "sent_at": _iso(message.created_at)}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
