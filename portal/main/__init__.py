"""The landing page and each role's home page."""
from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

bp = Blueprint("main", __name__)

ROLE_HOMES = {
    "clinician": "records.clinician_home",
    "patient": "records.my_chart",
    "compliance": "compliance.console",
    "admin": "admin.teams",
}


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return render_template("main/index.html")
    for role, endpoint in ROLE_HOMES.items():
        if current_user.has_role(role):
            return redirect(url_for(endpoint))
    return render_template("main/no_access.html"), 403


@bp.get("/home")
@login_required
def home():
    return redirect(url_for("main.index"))
