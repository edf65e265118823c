"""`python -m audit witness` as a real separate process on a free loopback port, for end-to-end tests.

The key is made with `python -m audit witness-keygen`, so the CLI the operator uses is the one
tested; the state file lives in the test's temporary folder and survives `restart()`.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from audit.note import Verifier
from tests.support.environment import ROOT, free_port

STARTUP_SECONDS = 30


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


class WitnessProcess:
    """A witness trusting `log_keys`; `url` is its submission prefix, `verifier` its cosigner key."""

    def __init__(self, folder: Path, log_keys: list[str], name: str = "witness.test/w1") -> None:
        self.key_path, self.state_path = folder / "witness.key", folder / "witness-state.json"
        keygen = audit_cli("witness-keygen", "--name", name, "--out", str(self.key_path))
        if keygen.returncode != 0:
            raise RuntimeError(f"witness-keygen failed: {keygen.stderr}")
        self.verifier = Verifier.from_vkey(keygen.stdout.strip())
        self.log_keys = log_keys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "audit", "witness", "--key", str(self.key_path),
                   "--state", str(self.state_path), "--port", str(self.port)]
        for vkey in self.log_keys:
            command += ["--log-key", vkey]
        return command

    def start(self) -> WitnessProcess:
        self.process = subprocess.Popen(self.command(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()
                if "listening on" in line:
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the witness exited {self.process.returncode}: {self.process.stderr.read()}")
        self.stop()
        raise RuntimeError("the witness did not start listening")

    def stop(self) -> int | None:
        """SIGTERM, then wait; returns the exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        process.stderr.close()
        return process.returncode

    def restart(self) -> WitnessProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> WitnessProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
