"""Sign-in with OpenID Connect, sign-out, and the server-side sessions behind flask-login."""
from flask import Blueprint

bp = Blueprint("auth", __name__)

from portal.auth import routes  # noqa: E402,F401  (registers the views on bp)
