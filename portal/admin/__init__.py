"""Administrators manage care teams: who is on which team, and which patients each team looks after."""
from portal.admin.views import bp

__all__ = ["bp"]
