"""Apps patients connect over SMART on FHIR: the registered apps, each patient's grant, codes and tokens.

Codes and tokens are stored only as SHA-256 hashes: the database never holds a value that would let
its reader call the API. An app's confidential secret is kept the same way.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base
from portal.models.columns import UtcDateTime, id_column, patient_fk, timestamp_column
from portal.models.users import User


class SmartApp(Base):
    """An app an administrator registered: public (no secret) or confidential, its redirect URIs and scopes."""

    __tablename__ = "smart_app"

    id: Mapped[str] = id_column()
    client_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    public: Mapped[bool] = mapped_column(sa.Boolean)
    secret_hash: Mapped[str | None] = mapped_column(sa.String(64))
    redirect_uris: Mapped[str] = mapped_column(sa.Text)  # one per line, matched exactly
    allowed_scopes: Mapped[str] = mapped_column(sa.Text)  # space-separated SMART scopes
    created_at: Mapped[datetime] = timestamp_column()
    created_by: Mapped[str | None] = mapped_column(sa.ForeignKey("user_account.id", ondelete="SET NULL"))

    @property
    def redirect_uri_list(self) -> list[str]:
        return self.redirect_uris.split()


class SmartGrant(Base):
    """A patient's consent for one app: the scopes granted, its use, and when (and why) it was revoked."""

    __tablename__ = "smart_grant"

    id: Mapped[str] = id_column()
    app_id: Mapped[str] = mapped_column(sa.ForeignKey("smart_app.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = patient_fk()
    scopes: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = timestamp_column()
    first_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    read_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(40))

    app: Mapped[SmartApp] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")


class SmartAuthorizationCode(Base):
    """A code issued after consent, exchanged at most once within its lifetime for the grant's first tokens."""

    __tablename__ = "smart_authorization_code"

    code_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(sa.ForeignKey("smart_app.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"))
    patient_id: Mapped[str] = patient_fk()
    redirect_uri: Mapped[str] = mapped_column(sa.Text)
    scopes: Mapped[str] = mapped_column(sa.Text)
    nonce: Mapped[str | None] = mapped_column(sa.String(255))
    code_challenge: Mapped[str] = mapped_column(sa.String(128))
    code_challenge_method: Mapped[str] = mapped_column(sa.String(10))
    auth_time: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = timestamp_column()
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    grant_id: Mapped[str | None] = mapped_column(sa.ForeignKey("smart_grant.id", ondelete="CASCADE"))

    app: Mapped[SmartApp] = relationship(lazy="joined")


class SmartToken(Base):
    """An access token (at most an hour) and, with offline_access, its refresh token; rotated on each refresh."""

    __tablename__ = "smart_token"

    id: Mapped[str] = id_column()
    grant_id: Mapped[str] = mapped_column(sa.ForeignKey("smart_grant.id", ondelete="CASCADE"), index=True)
    access_token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[str] = mapped_column(sa.Text)
    issued_at: Mapped[datetime] = timestamp_column()
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(40))

    grant: Mapped[SmartGrant] = relationship(lazy="joined")
