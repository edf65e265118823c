"""Serve the portal with eventlet: `python run.py [--host 127.0.0.1] [--port 5000]`.

Each process is one eventlet server; run several on different ports behind a load balancer with
sticky sessions and PORTAL_MESSAGE_QUEUE=redis://... so they deliver to each other's clients.
SIGTERM stops gracefully: Socket.IO clients are told to reconnect elsewhere, in-flight requests finish.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # Flask-SocketIO's supported server

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import eventlet.hubs  # noqa: E402
import eventlet.wsgi  # noqa: E402

from portal import create_app  # noqa: E402
from portal.auth.sockets import watch_session_expiry  # noqa: E402
from portal.config import ConfigError, Settings  # noqa: E402
from portal.extensions import socketio  # noqa: E402
from portal.messaging.events import announce_shutdown  # noqa: E402
from portal.observability import configure_logging  # noqa: E402
from portal.witnessing import watch_witness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the patient portal with eventlet.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    app = create_app(settings)
    listener = eventlet.listen((args.host, args.port))
    # debug=False: eventlet would otherwise send Python tracebacks to clients.
    server = eventlet.spawn(eventlet.wsgi.server, listener, app, log_output=False, debug=False,
                            socket_timeout=60, keepalive=True)
    eventlet.spawn_n(_stop_on_sigterm, server)
    eventlet.spawn_n(watch_session_expiry, app)
    eventlet.spawn_n(watch_witness, app)  # cosignatures off the request path; returns at once without a witness
    logging.getLogger("portal").info("portal serving on http://%s:%s", args.host, args.port)
    server.wait()
    return 0


def _stop_on_sigterm(server) -> None:
    """Wait for SIGTERM on a wake-up pipe: an idle hub may sleep in epoll for a long time, and a plain
    Python signal handler only runs once it wakes. The pipe wakes it at once."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the byte written to the pipe does the work
    while True:
        eventlet.hubs.trampoline(read_end, read=True)
        if signal.SIGTERM in os.read(read_end, 64):
            break
    _graceful_stop(server)


def _graceful_stop(server) -> None:
    """Tell Socket.IO clients to reconnect elsewhere, stop accepting, let in-flight requests finish."""
    announce_shutdown()
    eventlet.sleep(0.5)  # let the notices go out before the sockets close
    socketio.server.eio.disconnect()  # long-lived WebSockets would otherwise keep the worker alive
    flush = getattr(socketio.server.manager, "flush", None)
    if flush is not None:
        flush(timeout=3)  # the last messages and offline notices still reach the other workers
    server.kill(SystemExit)


if __name__ == "__main__":
    sys.exit(main())
