"""Administration: care teams and who is on them, users' sessions, and re-encryption under a new key."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask

from portal.access import record
from portal.actions import Action
from portal.auth.sessions import end_sessions, live_sessions
from portal.crypto import active_keyring, rotate, rotation_status
from portal.db import db_session
from portal.exceptions import InvalidInput, NotFound, found
from portal.extensions import socketio
from portal.models import LINKED_BY_ADMIN, CareTeam, CareTeamMember, CareTeamPatient, Patient, User
from portal.people import account_reference, patient_by_mrn


def teams_overview() -> list[dict]:
    teams = db_session.scalars(sa.select(CareTeam).order_by(CareTeam.name)).all()
    return [{"team": team, "clinicians": _members(team.id), "patient_count": _patient_count(team.id)} for team in teams]


def clinicians() -> list[User]:
    users = db_session.scalars(sa.select(User).where(User.roles.contains("clinician"))).all()
    return sorted((u for u in users if u.has_role("clinician")), key=lambda u: u.display_name or "")


def create_team(name: str) -> CareTeam:
    name = (name or "").strip()
    if not 2 <= len(name) <= 120:
        raise InvalidInput("bad_team_name", "A team name has 2 to 120 characters.")
    if db_session.scalars(sa.select(CareTeam).where(CareTeam.name == name)).first():
        raise InvalidInput("team_exists", "A team with that name already exists.")
    team = CareTeam(name=name)
    db_session.add(team)
    db_session.commit()
    return team


def get_team(team_id: str) -> CareTeam:
    return found(db_session.get(CareTeam, team_id), "There is no such team.")


def add_clinician(team: CareTeam, user_id: str) -> User:
    user = db_session.get(User, user_id)
    if user is None or not user.has_role("clinician"):
        raise InvalidInput("not_a_clinician", "Only clinicians can join a care team.")
    if db_session.get(CareTeamMember, (team.id, user.id)) is None:
        db_session.add(CareTeamMember(team_id=team.id, user_id=user.id))
        db_session.commit()
    return user


def remove_clinician(team: CareTeam, user_id: str) -> None:
    member = found(db_session.get(CareTeamMember, (team.id, user_id)), "That clinician is not on this team.")
    db_session.delete(member)
    db_session.commit()


def add_patient_by_mrn(team: CareTeam, mrn: str) -> Patient:
    patient = _known_patient(mrn)
    if db_session.get(CareTeamPatient, (team.id, patient.id)) is None:
        db_session.add(CareTeamPatient(team_id=team.id, patient_id=patient.id))
        db_session.commit()
    return patient


def _members(team_id: str) -> list[User]:
    return list(db_session.scalars(
        sa.select(User).join(CareTeamMember, CareTeamMember.user_id == User.id).where(CareTeamMember.team_id == team_id)
    ))


def _patient_count(team_id: str) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(CareTeamPatient).where(CareTeamPatient.team_id == team_id))


def _known_patient(mrn: str) -> Patient:
    patient = patient_by_mrn(mrn)
    if patient is None:
        raise InvalidInput("unknown_mrn", "No patient has that MRN.")
    return patient


# --------------------------------------------------------------------------- patient accounts and their charts

LINK_REASON_MIN, LINK_REASON_MAX = 10, 300
PATIENT_ACCOUNTS_SHOWN = 100
_ACCOUNT_REFERENCE = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")


@dataclass(frozen=True)
class LinkChange:
    """What an administrator's link or unlink did, for its audit events: the chart it left, the chart it
    reached, and the reason they typed."""

    user: User
    previous_patient_id: str | None
    patient_id: str | None
    reason: str


def patient_accounts(reference: str = "") -> list[User]:
    """Patient accounts, unlinked first, then by latest sign-in; ``reference`` (the start of an
    account id, as the "not linked" page shows it) narrows the list to that account."""
    reference = reference.strip().lower()
    if reference and not _ACCOUNT_REFERENCE.match(reference):
        raise InvalidInput("bad_reference", "An account reference is the 8 letters and digits the patient was shown.")
    query = sa.select(User).where(User.roles.contains("patient"))
    if reference:
        query = query.where(User.id.startswith(reference))
    query = query.order_by(User.patient_id.is_not(None), User.last_sign_in_at.desc()).limit(PATIENT_ACCOUNTS_SHOWN)
    return [user for user in db_session.scalars(query) if user.has_role("patient")]


def link_patient_account(user_id: str, mrn: str, reason: str) -> LinkChange:
    """Link a patient account to the chart with this MRN; the link stands over the provider's claim."""
    user, reason = _patient_account(user_id), checked_link_reason(reason)
    return _set_link(user, _known_patient(mrn).id, reason)


def unlink_patient_account(user_id: str, reason: str) -> LinkChange:
    """Unlink a patient account; the provider's claim does not link it again, only an administrator can."""
    user, reason = _patient_account(user_id), checked_link_reason(reason)
    return _set_link(user, None, reason)


def checked_link_reason(reason: str | None) -> str:
    """The administrator's reason, stored in the audit log as typed: one printable line."""
    reason = (reason or "").strip()
    if not LINK_REASON_MIN <= len(reason) <= LINK_REASON_MAX or not reason.isprintable():
        raise InvalidInput("bad_reason", f"Give the reason in {LINK_REASON_MIN} to {LINK_REASON_MAX} characters "
                       "on one line.")
    return reason


def _patient_account(user_id: str) -> User:
    user = db_session.get(User, user_id)
    if user is None:
        raise NotFound("no_such_user", "There is no such user.")
    if not user.has_role("patient"):
        raise InvalidInput("not_a_patient", "Only patient accounts can be linked to a chart.")
    return user


def _set_link(user: User, patient_id: str | None, reason: str) -> LinkChange:
    change = LinkChange(user, user.patient_id, patient_id, reason)
    user.patient_id, user.patient_link_source = patient_id, LINKED_BY_ADMIN
    db_session.commit()
    return change


# --------------------------------------------------------------------------- sessions


def users_with_live_sessions() -> list[tuple[User, int]]:
    """Every user with at least one live session, and how many."""
    counts = Counter(login.user for login in live_sessions())
    return sorted(counts.items(), key=lambda row: row[0].display_name or "")


def account_label(user: User) -> str:
    """Staff by name; a patient only as an account id (administrators see no patient names)."""
    return f"Patient account {account_reference(user)}" if user.has_role("patient") else (user.display_name or user.id)


def end_all_sessions(user_id: str) -> tuple[User, int]:
    """End every session of one user, on every worker, and cut their open connections."""
    user = db_session.get(User, user_id)
    if user is None:
        raise NotFound("no_such_user", "There is no such user.")
    return user, len(end_sessions(live_sessions(user.id), "revoked", not_before=True))


# --------------------------------------------------------------------------- encryption keys

rotation_state: dict[str, object] = {"running": False}  # this worker's web-started rotation


def key_status() -> dict:
    """Stored values per encryption and blind-index key (counted in SQL), and which keys are primary."""
    keyring = active_keyring()
    return {**rotation_status(db_session()), "primary": keyring.primary, "index_primary": keyring.index_primary}


def start_rotation(app: Flask, actor_id: str, actor_role: str | None, step_up_details: dict) -> bool:
    """Re-encrypt in the background (online, resumable); False when this worker is already rotating.

    The outcome is audited as ``keys.rotated`` for the administrator who started it, with their step-up.
    """
    if rotation_state["running"]:
        return False
    rotation_state.update(running=True, done=0, total=0)
    socketio.start_background_task(_rotate, app, actor_id, actor_role, step_up_details)
    return True


def _rotate(app: Flask, actor_id: str, actor_role: str | None, step_up_details: dict) -> None:
    def progress(done: int, total: int) -> None:
        rotation_state.update(done=done, total=total)
        socketio.sleep(0)  # between batches: let the worker serve requests meanwhile

    with app.app_context():
        summary = None
        try:
            summary = rotate(db_session.session_factory, progress=progress)
        finally:
            rotation_state["running"] = False
            db_session.remove()
            record(Action.KEYS_ROTATED, "allowed" if summary else "error", actor_id=actor_id, actor_role=actor_role,
                   reason="started from the web console", from_request=False,
                   details={**(summary.audit_details() if summary else {}), **step_up_details})
