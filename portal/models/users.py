"""Portal users, their sign-in sessions, care teams and break-glass grants."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import Encrypted
from portal.db import Base
from portal.models.columns import UtcDateTime, id_column, timestamp_column

LINKED_BY_CLAIM, LINKED_BY_ADMIN = "claim", "admin"


class User(UserMixin, Base):
    """A person known to the portal, keyed by their OpenID provider's (issuer, subject)."""

    __tablename__ = "user_account"
    __table_args__ = (sa.UniqueConstraint("issuer", "subject", name="uq_user_issuer_subject"),)

    id: Mapped[str] = id_column()
    issuer: Mapped[str] = mapped_column(sa.String(255))
    subject: Mapped[str] = mapped_column(sa.String(255))
    display_name: Mapped[str | None] = mapped_column(Encrypted(str))
    email: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)  # shown nowhere on a request path
    roles: Mapped[str] = mapped_column(sa.String(100), default="")
    patient_id: Mapped[str | None] = mapped_column(sa.ForeignKey("patient.id", ondelete="SET NULL"), index=True)
    # Who decided patient_id: "claim" (the provider's patient claim, again at every sign-in) or
    # "admin" (an administrator linked or unlinked the account; sign-ins leave that decision alone).
    patient_link_source: Mapped[str | None] = mapped_column(sa.String(10))
    created_at: Mapped[datetime] = timestamp_column()
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set when sessions are revoked: later sign-ins must rest on a provider sign-in made after it.
    sessions_not_before: Mapped[datetime | None] = mapped_column(UtcDateTime())

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(filter(None, self.roles.split(",")))

    def has_role(self, role: str) -> bool:
        return role in self.role_set

    @property
    def linked_by_admin(self) -> bool:
        return self.patient_link_source == LINKED_BY_ADMIN


class LoginSession(Base):
    """A server-side sign-in session: lets sign-out and idle time-out take effect on every worker."""

    __tablename__ = "login_session"

    id: Mapped[str] = id_column()
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    # Encrypted columns that requests do not read are deferred: loaded (and decrypted) only when used.
    id_token: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)
    created_at: Mapped[datetime] = timestamp_column()
    last_seen_at: Mapped[datetime] = timestamp_column()
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    end_reason: Mapped[str | None] = mapped_column(sa.String(40))
    # The provider's session id ("sid" claim): a back-channel logout names it.
    provider_sid: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    # An IP address is one of HIPAA's eighteen identifiers, so both are encrypted like PHI.
    source_ip: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)
    user_agent: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)
    # A fresh sign-in proven for one sensitive action, valid until step_up_expires_at.
    step_up_action: Mapped[str | None] = mapped_column(sa.String(40))
    step_up_auth_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    step_up_acr: Mapped[str | None] = mapped_column(sa.String(255))
    step_up_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # What the user asked for before being sent to sign in again (e.g. a break-glass reason).
    step_up_pending: Mapped[str | None] = mapped_column(Encrypted(str), deferred=True)

    user: Mapped[User] = relationship(lazy="joined")


class SocketConnection(Base):
    """An open Socket.IO connection of a sign-in session, so ending the session can cut it on any worker."""

    __tablename__ = "socket_connection"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    login_session_id: Mapped[str] = mapped_column(sa.ForeignKey("login_session.id", ondelete="CASCADE"), index=True)
    namespace: Mapped[str] = mapped_column(sa.String(40))
    connected_at: Mapped[datetime] = timestamp_column()


class SeenLogoutToken(Base):
    """A back-channel logout token already used: its (issuer, jti) digest, kept until it would expire anyway."""

    __tablename__ = "seen_logout_token"

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seen_at: Mapped[datetime] = timestamp_column()
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class CareTeam(Base):
    __tablename__ = "care_team"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    created_at: Mapped[datetime] = timestamp_column()


class CareTeamMember(Base):
    """A clinician on a care team."""

    __tablename__ = "care_team_member"

    team_id: Mapped[str] = mapped_column(sa.ForeignKey("care_team.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True)


class CareTeamPatient(Base):
    """A patient looked after by a care team."""

    __tablename__ = "care_team_patient"

    team_id: Mapped[str] = mapped_column(sa.ForeignKey("care_team.id", ondelete="CASCADE"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), primary_key=True, index=True)


class BreakGlass(Base):
    """An emergency access by a clinician outside the patient's care team, with the typed reason."""

    __tablename__ = "break_glass"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Encrypted(str))
    started_at: Mapped[datetime] = timestamp_column()
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(sa.ForeignKey("user_account.id", ondelete="SET NULL"))
