"""The compliance officers' console: audit search, flags, integrity, exports, live feed."""
from portal.compliance import feed  # noqa: F401 - registers the live feed's Socket.IO handlers
from portal.compliance.views import bp

__all__ = ["bp"]
