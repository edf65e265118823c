"""Conversations and their messages. Message bodies are encrypted; ordering is a per-conversation sequence."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from portal.crypto import Encrypted
from portal.db import Base
from portal.models.columns import id_column, timestamp_column

CONVERSATION_KINDS = ("direct", "team", "patient")


class Conversation(Base):
    """A direct chat between two clinicians, a care team's group chat, or a patient's thread with their team."""

    __tablename__ = "conversation"

    id: Mapped[str] = id_column()
    kind: Mapped[str] = mapped_column(sa.String(10))
    team_id: Mapped[str | None] = mapped_column(sa.ForeignKey("care_team.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str | None] = mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    direct_key: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = timestamp_column()


class ConversationMember(Base):
    """The two participants of a direct conversation (team and patient threads derive membership from care teams)."""

    __tablename__ = "conversation_member"

    conversation_id: Mapped[str] = mapped_column(sa.ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True)


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "seq", name="uq_message_conversation_seq"),
        sa.UniqueConstraint("sender_id", "idempotency_key", name="uq_message_sender_idempotency"),
    )

    id: Mapped[str] = id_column()
    conversation_id: Mapped[str] = mapped_column(sa.ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    sender_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(sa.String(64))
    body: Mapped[str] = mapped_column(Encrypted(str))
    created_at: Mapped[datetime] = timestamp_column()


class ConversationRead(Base):
    """How far a user has read a conversation (read receipts and unread counts)."""

    __tablename__ = "conversation_read"

    conversation_id: Mapped[str] = mapped_column(sa.ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    last_read_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime] = timestamp_column()
