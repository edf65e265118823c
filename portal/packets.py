"""How the Socket.IO server reads what clients send: a packet that is not JSON, or nested past what the
parser allows, is refused with one warning line, never an error with a traceback that anyone, signed in
or not, could repeat to flood the logs."""
from __future__ import annotations

import json
import logging
from typing import Any

import socketio

PACKET_TYPES = frozenset(range(7))  # CONNECT .. BINARY_ACK
EVENTS = frozenset({socketio.packet.EVENT, socketio.packet.BINARY_EVENT})
ACKS = frozenset({socketio.packet.ACK, socketio.packet.BINARY_ACK})


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
    """python-socketio's packet (``serializer=GuardedPacket``): anything a client sends that the library would
    trip over later (an unknown type, an event without a name, a bad attachment) is refused as it is read."""

    json = _GuardedJson

    def decode(self, encoded_packet: str | bytes) -> int:
        try:
            attachments = super().decode(encoded_packet)
        except MalformedPacket:
            raise
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            raise MalformedPacket(f"malformed packet: {type(exc).__name__}") from None
        if self.packet_type not in PACKET_TYPES:
            raise MalformedPacket("malformed packet: unknown type")
        if self.packet_type in EVENTS and not (isinstance(self.data, list) and self.data
                                               and isinstance(self.data[0], str)):
            raise MalformedPacket("malformed packet: an event without a name")
        if self.packet_type in ACKS and not isinstance(self.data, list):
            raise MalformedPacket("malformed packet: an acknowledgement without arguments")
        return attachments

    def add_attachment(self, attachment: bytes) -> bool:
        try:
            return super().add_attachment(attachment)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            raise MalformedPacket(f"malformed attachment: {type(exc).__name__}") from None


class _RefusedPacketsAreWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _refused_input(record.exc_info):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = "malformed Socket.IO packet refused", (), None, None
        return True


def _refused_input(exc_info: tuple[Any, ...]) -> bool:
    """A packet GuardedPacket refused, or one python-socketio's own dispatch refused (an attachment nobody
    announced): a ValueError raised in ``_handle_eio_message`` itself, not in anything it called."""
    error, trace = exc_info[1], exc_info[2]
    if isinstance(error, MalformedPacket):
        return True
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return isinstance(error, ValueError) and trace is not None and trace.tb_frame.f_code.co_name == "_handle_eio_message"


def socket_loggers() -> dict[str, logging.Logger]:
    """The loggers to hand Flask-SocketIO (``logger=``, ``engineio_logger=``): given a logger, the libraries
    add no stream handler of their own, so their lines reach the portal's JSON log, at WARNING and above,
    with refused packets as one warning each."""
    loggers = {}
    for argument, name in (("logger", "socketio.server"), ("engineio_logger", "engineio.server")):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not any(isinstance(existing, _RefusedPacketsAreWarnings) for existing in logger.filters):
            logger.addFilter(_RefusedPacketsAreWarnings())
        loggers[argument] = logger
    return loggers
