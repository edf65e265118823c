"""Server-side sign-in sessions: rotation at sign-in, idle time-out, absolute lifetime, sign-out.

The browser holds only a random token in the signed session cookie; the database holds its hash.
That makes sign-out and time-outs effective on every worker and for Socket.IO connections too.
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
import user_agents
from flask import current_app, g, redirect, request, session, url_for
from flask_login import login_user, logout_user
from werkzeug.wrappers import Response

from portal import services
from portal.access import record, role_label
from portal.actions import Action
from portal.db import db_session
from portal.exceptions import Unauthenticated
from portal.extensions import login_manager
from portal.models import LoginSession, User
from portal.request_fields import user_agent, wants_json
from portal.signals import sessions_ended

# A provider clock within this of ours is taken as is (its whole-second claims and the token's trip blur less).
CLOCK_SKEW_TOLERANCE = timedelta(seconds=5)
TOUCH_EVERY = timedelta(seconds=60)  # a read writes nothing but its audit entry, bar this once a minute
# Why a session ended, as the sign-in page and the pages' live connections say it.
SIGNED_OUT_MESSAGES = {
    "idle_timeout": "You were signed out after a period of inactivity. Sign in again to continue.",
    "session_expired": "Your session reached its maximum length. Sign in again to continue.",
    "signed_out": "You have signed out.",
    "provider_logout": "You were signed out at your sign-in provider, so the portal signed you out too.",
    "revoked": "This session was ended from your session list or by an administrator. Sign in again to continue.",
    "replaced": "You signed in again in this browser.",
}


# Left in the browser whose session was revoked, so its next sign-in asks the provider for the password.
REVOKED_HERE = "revoked_here"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(user: User, id_token: str | None, claims: Mapping[str, Any]) -> LoginSession:
    """Sign the user in with a fresh session id (never reuse the pre-sign-in session)."""
    previous = current_login()
    if previous is not None and previous.ended_at is None:
        end_sessions([previous], "replaced")
    session.clear()
    token = secrets.token_urlsafe(32)
    login = LoginSession(token_hash=_hash(token), user=user, id_token=id_token,
                         provider_sid=_claim_text(claims.get("sid")),
                         source_ip=request.remote_addr, user_agent=user_agent())
    db_session.add(login)
    db_session.commit()
    session["sid"] = token
    session.permanent = True
    login_user(user)
    return login


def current_login() -> LoginSession | None:
    """This browser's session row, read once per request (or Socket.IO event) for the token it holds."""
    token = session.get("sid")
    if not token:
        return None
    cached = g.get("_login_session")
    if cached is None or cached[0] != token:
        login = db_session.scalars(sa.select(LoginSession).where(LoginSession.token_hash == _hash(token))).first()
        g._login_session = cached = (token, login)
    return cached[1]


def end_session(login: LoginSession | None, reason: str) -> None:
    """End the browser's own session (sign-out) and forget it in this browser."""
    if login is not None:
        end_sessions([login], reason)
    logout_user()
    session.clear()


def end_sessions(logins: Iterable[LoginSession], reason: str, not_before: bool = False) -> list[LoginSession]:
    """End these sessions now, on every worker: later requests find them ended, and their
    open Socket.IO connections are told why and disconnected. Returns the ones that were live.

    ``not_before`` (a revocation) also refuses later sign-ins that rest on an older sign-in at the
    provider: a lost laptop's browser still holds the provider's session and would get straight back in.
    """
    now = datetime.now(timezone.utc)
    logins = list(logins)
    ended = [login for login in logins if login.ended_at is None]
    for login in ended:
        login.ended_at, login.end_reason = now, reason
        login.step_up_action = login.step_up_pending = None
    if not_before:
        for user in {login.user for login in logins}:
            user.sessions_not_before = now
    db_session.commit()
    if ended:
        sessions_ended.send(current_app._get_current_object(), login_session_ids=[login.id for login in ended], reason=reason)
    return ended


def live_sessions(user_id: str | None = None) -> list[LoginSession]:
    """The user's (or everyone's) sessions that have not ended or timed out, most recently used first."""
    now = datetime.now(timezone.utc)
    query = sa.select(LoginSession).where(LoginSession.ended_at.is_(None)).order_by(LoginSession.last_seen_at.desc())
    if user_id is not None:
        query = query.where(LoginSession.user_id == user_id)
    return [login for login in db_session.scalars(query) if expiry_reason(login, now) is None]


def revoked_in_this_browser() -> bool:
    """Whether this browser's portal session was ended by a revocation (its owner's session list, or
    an administrator): it may be the lost laptop, so its next sign-in must be a new one at the provider.

    The browser still holds the ended session's cookie, or the mark left when the end was noticed.
    """
    if session.get(REVOKED_HERE):
        return True
    login = current_login()
    return login is not None and login.end_reason == "revoked"


def signed_in_since_revocation(user: User, id_claims: Mapping[str, Any], now: datetime | None = None) -> bool:
    """After a revocation, only a sign-in made at the provider since then counts.

    ``auth_time`` is on the provider's clock, which may be minutes off ours. The token's ``iat`` (issued
    moments ago, on the same clock) tells how far off: past a small tolerance, ``auth_time`` is moved onto
    our clock before it is compared with the revocation.
    """
    if user.sessions_not_before is None:
        return True
    auth_time, issued = claim_time(id_claims.get("auth_time")), claim_time(id_claims.get("iat"))
    if auth_time is None or issued is None:
        return False
    skew = (now or datetime.now(timezone.utc)) - issued  # our clock minus the provider's, and the token's trip
    if abs(skew) > CLOCK_SKEW_TOLERANCE:
        auth_time += skew
    # auth_time has whole seconds: a sign-in counts from the first whole second after the revocation.
    not_before = user.sessions_not_before
    first_second = not_before.replace(microsecond=0) + timedelta(seconds=1 if not_before.microsecond else 0)
    return auth_time >= first_second


def claim_time(value: object) -> datetime | None:
    """A NumericDate claim (auth_time, iat) as an aware datetime; anything else is None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value, timezone.utc)


def _claim_text(value: object) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


def expiry_reason(login: LoginSession, now: datetime) -> str | None:
    settings = services.settings()
    if login.ended_at is not None:
        return login.end_reason or "signed_out"
    if now - login.last_seen_at > timedelta(minutes=settings.session_idle_minutes):
        return "idle_timeout"
    if now - login.created_at > timedelta(hours=settings.session_max_hours):
        return "session_expired"
    return None


def load_user(user_id: str) -> User | None:
    """flask-login's user loader: a user counts as signed in only while their session is live."""
    login = current_login()
    if login is None or login.user_id != user_id:
        return None
    now = datetime.now(timezone.utc)
    reason = expiry_reason(login, now)
    if reason is not None:
        _expire(login, reason)
        return None
    idle_limit = timedelta(minutes=services.settings().session_idle_minutes)
    if not g.get("passive_activity") and now - login.last_seen_at > min(TOUCH_EVERY, idle_limit / 4):
        login.last_seen_at = now
        db_session.commit()
    return login.user


def _expire(login: LoginSession, reason: str) -> None:
    if login.ended_at is None:
        # We run inside flask-login's user loader: without a user in g, record() would read
        # current_user, which calls this loader again (endless recursion, then a 500).
        g._login_user = login_manager.anonymous_user()
        end_timed_out(login, reason)
    g.session_end_reason = reason
    session.clear()
    if reason == "revoked":
        session[REVOKED_HERE] = True


def end_timed_out(login: LoginSession, reason: str, from_request: bool = True) -> None:
    """End a timed-out session once, whichever worker notices first; that one writes the audit event."""
    claimed = db_session.execute(
        sa.update(LoginSession).where(LoginSession.id == login.id, LoginSession.ended_at.is_(None))
        .values(ended_at=datetime.now(timezone.utc), end_reason=reason)
    ).rowcount
    db_session.commit()
    if claimed:
        record(Action.signout_after(reason), "allowed", actor_id=login.user_id, actor_role=role_label(login.user) or None,
               reason=reason, from_request=from_request)


def on_unauthorized() -> Response:
    """Pages go to the sign-in page saying why; APIs get Unauthenticated, which the edge answers with 401."""
    reason = g.get("session_end_reason")
    if wants_json():
        message = "Your session ended after inactivity." if reason == "idle_timeout" else "Sign in first."
        raise Unauthenticated(reason or "unauthenticated", message, token_error=None)
    return redirect(url_for("auth.signin_page", reason=reason or None, next=_safe_next()))


def _safe_next() -> str | None:
    path = request.full_path if request.query_string else request.path
    return path if path.startswith("/") and not path.startswith("//") and request.method == "GET" else None


@dataclass(frozen=True)
class SessionView:
    id: str
    device: str
    address: str
    started: datetime
    last_seen: datetime
    current: bool


def session_view(login: LoginSession, current: LoginSession | None) -> SessionView:
    """How a session is shown to its owner: a readable device name rather than the raw user agent."""
    device = str(user_agents.parse(login.user_agent)) if login.user_agent else "Unknown device"
    return SessionView(login.id, device, login.source_ip or "unknown", login.created_at, login.last_seen_at,
                       current is not None and login.id == current.id)
