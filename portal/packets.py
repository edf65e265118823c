"""How the Socket.IO server reads what clients send: a packet that is not JSON, or nested past what the
parser allows, is refused with one warning line, never an error with a traceback that anyone, signed in
or not, could repeat to flood the logs."""
from __future__ import annotations

import json
import logging
from typing import Any

import socketio

SOCKET_LOGGERS = ("engineio.server", "socketio.server")


class MalformedPacket(ValueError):
    """A client's packet could not be read."""


class _GuardedJson:
    """The json module's interface, with every way a client's bytes can fail to parse turned into one error."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
        try:
            return json.loads(text, *args, **kwargs)
        except (ValueError, RecursionError) as exc:
            raise MalformedPacket(f"malformed packet: {type(exc).__name__}") from None


class GuardedPacket(socketio.packet.Packet):
    """python-socketio's packet (``serializer=GuardedPacket``), reading payloads through _GuardedJson."""

    json = _GuardedJson


class _RefusedPacketsAreWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MalformedPacket):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = "malformed Socket.IO packet refused", (), None, None
        return True


def quiet_refused_packets() -> None:
    """Log refused packets from the Socket.IO and Engine.IO servers as one warning each."""
    for name in SOCKET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _RefusedPacketsAreWarnings) for existing in logger.filters):
            logger.addFilter(_RefusedPacketsAreWarnings())
