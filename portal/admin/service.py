"""Administration: care teams and who is on them, users' sessions, and re-encryption under a new key."""
from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from flask import Flask

from portal.access import record
from portal.actions import Action
from portal.auth.sessions import end_sessions, live_sessions
from portal.crypto import active_keyring, blind_index_terms, rotate, rotation_status
from portal.db import db_session
from portal.exceptions import InvalidInput, NotFound
from portal.extensions import socketio
from portal.models import CareTeam, CareTeamMember, CareTeamPatient, Patient, User


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
    team = db_session.get(CareTeam, team_id)
    if team is None:
        raise NotFound("not_found", "There is no such team.")
    return team


def add_clinician(team: CareTeam, user_id: str) -> User:
    user = db_session.get(User, user_id)
    if user is None or not user.has_role("clinician"):
        raise InvalidInput("not_a_clinician", "Only clinicians can join a care team.")
    if db_session.get(CareTeamMember, (team.id, user.id)) is None:
        db_session.add(CareTeamMember(team_id=team.id, user_id=user.id))
        db_session.commit()
    return user


def remove_clinician(team: CareTeam, user_id: str) -> None:
    member = db_session.get(CareTeamMember, (team.id, user_id))
    if member is None:
        raise NotFound("not_found", "That clinician is not on this team.")
    db_session.delete(member)
    db_session.commit()


def add_patient_by_mrn(team: CareTeam, mrn: str) -> Patient:
    patient = db_session.scalars(
        sa.select(Patient).where(Patient.mrn_bidx.in_(blind_index_terms(Patient, "mrn", mrn.strip())))
    ).first() if mrn.strip() else None
    if patient is None:
        raise InvalidInput("unknown_mrn", "No patient has that MRN.")
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


# --------------------------------------------------------------------------- sessions


def users_with_live_sessions() -> list[tuple[User, int]]:
    """Every user with at least one live session, and how many."""
    counts = Counter(login.user for login in live_sessions())
    return sorted(counts.items(), key=lambda row: row[0].display_name or "")


def account_label(user: User) -> str:
    """Staff by name; a patient only as an account id (administrators see no patient names)."""
    return f"Patient account {user.id[:8]}" if user.has_role("patient") else (user.display_name or user.id)


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
