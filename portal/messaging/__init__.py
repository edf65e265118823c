"""Real-time messaging: conversations, the chat page and the /chat Socket.IO namespace."""
from portal.messaging import events  # noqa: F401 - registers the /chat namespace's handlers
from portal.messaging.views import bp

__all__ = ["bp"]
