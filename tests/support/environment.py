"""What the test machine offers: free ports, whether this is CI, and how a missing service is reported."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the project: run.py, pyproject.toml, deploy/
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_service(name: str, url: str, enable_hint: str) -> None:
    """Skip (or fail in CI) when a service a test needs is not configured or not reachable."""
    if not url:
        reason = f"{name} tests need {enable_hint}"
        if IN_CI:
            pytest.fail(f"CI must run the {name} tests: {reason}")
        pytest.skip(reason)
