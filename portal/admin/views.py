"""Administrator pages: care teams and who is on them. Every change is audited."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_required

from portal.access import authorize, record
from portal.admin import bp, service
from portal.records.service import parse_id


@bp.get("/teams")
@login_required
def teams():
    authorize("admin.teams")
    return render_template("admin/teams.html", teams=service.teams_overview(), clinicians=service.clinicians())


@bp.post("/teams")
@login_required
def create_team():
    authorize("admin.teams", details={"change": "create_team"})
    team = service.create_team(request.form.get("name", ""))
    record("admin.team.created", "allowed", resource_type="care_team", resource_id=team.id)
    flash(f"Team {team.name} created.", "success")
    return redirect(url_for("admin.teams"))


@bp.post("/teams/<team_id>/clinicians")
@login_required
def add_clinician(team_id: str):
    team = _team_to_change(team_id, "add_clinician")
    user = service.add_clinician(team, request.form.get("user_id", ""))
    record("admin.team.clinician_added", "allowed", resource_type="care_team", resource_id=team.id,
           details={"user": user.id})
    flash(f"{user.display_name} is now on {team.name}.", "success")
    return redirect(url_for("admin.teams"))


@bp.post("/teams/<team_id>/clinicians/<user_id>/remove")
@login_required
def remove_clinician(team_id: str, user_id: str):
    team = _team_to_change(team_id, "remove_clinician")
    service.remove_clinician(team, parse_id(user_id, "user id"))
    record("admin.team.clinician_removed", "allowed", resource_type="care_team", resource_id=team.id,
           details={"user": user_id})
    flash(f"Removed from {team.name}; their access to the team's charts and conversations ends now.", "success")
    return redirect(url_for("admin.teams"))


@bp.post("/teams/<team_id>/patients")
@login_required
def add_patient(team_id: str):
    team = _team_to_change(team_id, "add_patient")
    patient = service.add_patient_by_mrn(team, request.form.get("mrn", ""))
    record("admin.team.patient_added", "allowed", patient_id=patient.id, resource_type="care_team", resource_id=team.id)
    flash(f"Patient added to {team.name}.", "success")
    return redirect(url_for("admin.teams"))


def _team_to_change(team_id: str, change: str):
    """The decision (audited) first, then the team: an admin-only change to one care team."""
    authorize("admin.teams", details={"change": change})
    return service.get_team(parse_id(team_id, "team id"))
