"""Administrators manage care teams: who is on which team, and which patients each team looks after."""
from flask import Blueprint

bp = Blueprint("admin", __name__)

from portal.admin import views  # noqa: E402,F401
