"""The chat benchmark's baseline: a bare Flask-SocketIO echo server on eventlet, as run.py serves the portal.

    python bench/bare_echo_server.py PORT CHANNEL [REDIS_URL]

It answers the portal's chat events (``join``, ``send``) on the same namespace with the same shapes and
broadcasts each message to its room, through Redis when REDIS_URL is given: the portal's Socket.IO path
with none of its work (no sign-in, no database, no audit).
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import sys  # noqa: E402
import uuid  # noqa: E402

from flask import Flask  # noqa: E402
from flask_socketio import SocketIO, emit, join_room  # noqa: E402

NS = "/chat"  # the portal's chat namespace


def main(port: int, channel: str, queue: str | None) -> None:
    app = Flask("bare-echo")
    socketio = SocketIO(app, async_mode="eventlet", message_queue=queue, channel=channel, cors_allowed_origins="*")
    seq = {"n": 0}

    @socketio.on("join", namespace=NS)
    def _join(payload):
        join_room(f"conv:{payload['conversation_id']}")
        return {"ok": True, "last_seq": 0}

    @socketio.on("send", namespace=NS)
    def _send(payload):
        seq["n"] += 1
        message = {"id": uuid.uuid4().hex, "conversation_id": payload["conversation_id"], "seq": seq["n"],
                   "body": payload["body"], "sender": {"id": "echo", "name": "Echo"}}
        emit("message", message, to=f"conv:{payload['conversation_id']}")
        return {"ok": True, "message": message}

    @app.get("/healthz")
    def _health():
        return "ok"

    socketio.run(app, host="127.0.0.1", port=port, log_output=False)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
