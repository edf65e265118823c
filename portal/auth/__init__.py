"""Sign-in with OpenID Connect, sign-out, and the server-side sessions behind flask-login."""
from portal.auth.routes import bp

__all__ = ["bp"]
