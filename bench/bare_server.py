"""The benchmarks' baseline: a bare Flask app on eventlet.wsgi (run.py's server) returning fixed bytes.

    python bench/bare_server.py PORT FILE CONTENT_TYPE

Every GET answers FILE's bytes with CONTENT_TYPE: the same response the portal gives, with none of its work.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import eventlet.wsgi  # noqa: E402
from flask import Flask, Response  # noqa: E402


def main(port: int, body_file: str, content_type: str) -> None:
    body = Path(body_file).read_bytes()
    app = Flask("bare")

    @app.get("/<path:_path>")
    def same_bytes(_path: str) -> Response:
        return Response(body, content_type=content_type)

    eventlet.wsgi.server(eventlet.listen(("127.0.0.1", port)), app, log_output=False, debug=False, keepalive=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
