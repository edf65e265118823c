"""Serve the portal with eventlet: `python run.py [--host 127.0.0.1] [--port 5000]`.

Each process is one eventlet server; run several on different ports behind a load balancer with
sticky sessions and PORTAL_MESSAGE_QUEUE=redis://... so they deliver to each other's clients.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # Flask-SocketIO's supported server

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from portal.config import ConfigError, Settings  # noqa: E402


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
    from portal import create_app
    from portal.extensions import socketio
    from portal.observability import configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    signal.signal(signal.SIGTERM, lambda *_: _graceful_exit(socketio))
    print(f"portal serving on http://{args.host}:{args.port}", flush=True)
    socketio.run(app, host=args.host, port=args.port, log_output=False, use_reloader=False)
    return 0


SHUTDOWN_GRACE_SECONDS = 0.5


def _graceful_exit(socketio) -> None:
    """SIGTERM: tell connected clients to reconnect elsewhere, then stop accepting work.

    The handler runs inside eventlet's hub, which cannot wait: the notices are queued here and the
    exit (socketio.stop raises SystemExit) runs on a hub timer, after the writers have sent them.
    """
    try:
        from portal.messaging.events import announce_shutdown

        announce_shutdown()
    finally:
        eventlet.hubs.get_hub().schedule_call_global(SHUTDOWN_GRACE_SECONDS, socketio.stop)


if __name__ == "__main__":
    sys.exit(main())
