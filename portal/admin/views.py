"""Administrator pages: care teams, users' sessions and encryption keys. Every change is audited."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from portal.access import authorize, record, role_label
from portal.actions import Action
from portal.admin import service
from portal.auth import step_up
from portal.people import account_reference
from portal.validation import parse_id

bp = Blueprint("admin", __name__)


@bp.get("/teams")
@login_required
def teams():
    authorize(Action.ADMIN_TEAMS)
    return render_template("admin/teams.html", teams=service.teams_overview(), clinicians=service.clinicians())


@bp.post("/teams")
@login_required
def create_team():
    authorize(Action.ADMIN_TEAMS, details={"change": "create_team"})
    team = service.create_team(request.form.get("name", ""))
    return _team_changed(Action.ADMIN_TEAM_CREATED, team, f"Team {team.name} created.")


@bp.post("/teams/<team_id>/clinicians")
@login_required
def add_clinician(team_id: str):
    team = _team_to_change(team_id, "add_clinician")
    user = service.add_clinician(team, request.form.get("user_id", ""))
    return _team_changed(Action.ADMIN_TEAM_CLINICIAN_ADDED, team, f"{user.display_name} is now on {team.name}.",
                         details={"user": user.id})


@bp.post("/teams/<team_id>/clinicians/<user_id>/remove")
@login_required
def remove_clinician(team_id: str, user_id: str):
    team = _team_to_change(team_id, "remove_clinician")
    service.remove_clinician(team, parse_id(user_id, "user id"))
    return _team_changed(Action.ADMIN_TEAM_CLINICIAN_REMOVED, team,
                         f"Removed from {team.name}; their access to the team's charts and conversations ends now.",
                         details={"user": user_id})


@bp.post("/teams/<team_id>/patients")
@login_required
def add_patient(team_id: str):
    team = _team_to_change(team_id, "add_patient")
    patient = service.add_patient_by_mrn(team, request.form.get("mrn", ""))
    return _team_changed(Action.ADMIN_TEAM_PATIENT_ADDED, team, f"Patient added to {team.name}.", patient_id=patient.id)


def _team_changed(action: Action, team, message: str, **fields):
    """Record a change to a care team, say so, and go back to the teams."""
    record(action, "allowed", resource_type="care_team", resource_id=team.id, **fields)
    flash(message, "success")
    return redirect(url_for("admin.teams"))


def _team_to_change(team_id: str, change: str):
    """The decision (audited) first, then the team: an admin-only change to one care team."""
    authorize(Action.ADMIN_TEAMS, details={"change": change})
    return service.get_team(parse_id(team_id, "team id"))


# --------------------------------------------------------------------------- patient accounts and their charts


@bp.get("/patient-accounts")
@login_required
def patient_accounts():
    """Patient accounts and whether each is linked to a chart; link or unlink one by MRN."""
    authorize(Action.ADMIN_PATIENT_LINKS)
    reference = request.args.get("account", "")
    return render_template("admin/patient_accounts.html", accounts=service.patient_accounts(reference),
                           reference=reference, account_label=service.account_label,
                           reason_limits=(service.LINK_REASON_MIN, service.LINK_REASON_MAX))


@bp.post("/users/<user_id>/chart-link")
@login_required
def link_chart(user_id: str):
    """Link a patient account to the chart with the typed MRN; it stands over the provider's claim."""
    user_id = _account_to_change(user_id, "link")
    change = service.link_patient_account(user_id, request.form.get("mrn", ""), request.form.get("reason", ""))
    if change.previous_patient_id and change.previous_patient_id != change.patient_id:
        _record_link_change(Action.ADMIN_PATIENT_UNLINKED, change, change.previous_patient_id)
    _record_link_change(Action.ADMIN_PATIENT_LINKED, change, change.patient_id)
    flash(f"{service.account_label(change.user)} is linked to the chart with that MRN.", "success")
    return redirect(url_for("admin.patient_accounts", account=account_reference(change.user)))


@bp.post("/users/<user_id>/chart-link/remove")
@login_required
def unlink_chart(user_id: str):
    """Unlink a patient account; only an administrator can link it again (the claim no longer does)."""
    user_id = _account_to_change(user_id, "unlink")
    change = service.unlink_patient_account(user_id, request.form.get("reason", ""))
    _record_link_change(Action.ADMIN_PATIENT_UNLINKED, change, change.previous_patient_id)
    flash(f"{service.account_label(change.user)} is no longer linked to a chart.", "success")
    return redirect(url_for("admin.patient_accounts", account=account_reference(change.user)))


def _account_to_change(user_id: str, change: str) -> str:
    """The account id, then the decision (audited): an admin-only change to one account's chart link."""
    user_id = parse_id(user_id, "user id")
    authorize(Action.ADMIN_PATIENT_LINKS, details={"change": change, "user": user_id})
    return user_id


def _record_link_change(action: Action, change: service.LinkChange, patient_id: str | None) -> None:
    record(action, "allowed", patient_id=patient_id, resource_type="user", resource_id=change.user.id,
           reason=change.reason)


# --------------------------------------------------------------------------- sessions


@bp.get("/sessions")
@login_required
def sessions():
    authorize(Action.ADMIN_SESSIONS)
    return render_template("admin/sessions.html", users=service.users_with_live_sessions(),
                           account_label=service.account_label)


@bp.post("/users/<user_id>/sessions/end")
@login_required
def end_user_sessions(user_id: str):
    """End every session of one user at once (a lost laptop, a leaver), on every worker."""
    user_id = parse_id(user_id, "user id")
    authorize(Action.ADMIN_SESSIONS, details={"change": "end_all", "user": user_id})
    user, ended = service.end_all_sessions(user_id)
    record(Action.SESSION_REVOKED, "allowed", resource_type="user", resource_id=user.id, reason="ended by an administrator",
           details={"user": user.id, "sessions": ended})
    flash(f"Ended {ended} session(s) of {service.account_label(user)}.", "success")
    return redirect(url_for("admin.sessions"))


# --------------------------------------------------------------------------- encryption keys


@bp.get("/keys")
@login_required
def keys():
    authorize(Action.ADMIN_KEYS)
    return render_template("admin/keys.html", status=service.key_status(), rotation=service.rotation_state,
                           proof=step_up.current(step_up.Sensitive.KEY_ROTATION))


@bp.post("/keys/rotate")
@login_required
def rotate_keys():
    """Re-encrypt everything under the primary key; asks for a fresh sign-in first."""
    proof = step_up.current(step_up.Sensitive.KEY_ROTATION)
    authorize(Action.ADMIN_KEYS, details={"change": "rotate", **step_up.details(proof)})
    if proof is None or not step_up.consume(step_up.Sensitive.KEY_ROTATION):  # single use, even for requests racing this one
        step_up.ask(step_up.Sensitive.KEY_ROTATION, url_for("admin.keys"))
    if service.start_rotation(current_app._get_current_object(), current_user.id, role_label(current_user),
                              proof.audit_details()):
        record(Action.KEYS_ROTATION_STARTED, "allowed", reason="web console", details=proof.audit_details())
        flash("Re-encryption started. The counts below fall to zero for the old keys as it proceeds.", "success")
    else:
        flash("A re-encryption is already running on this worker.", "info")
    return redirect(url_for("admin.keys"))
