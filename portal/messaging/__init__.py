"""Real-time messaging: conversations, the chat page and the /chat Socket.IO namespace."""
from flask import Blueprint

bp = Blueprint("messaging", __name__)

from portal.messaging import events, views  # noqa: E402,F401
