"""Private PostgreSQL and Redis instances that fault tests may stop, restart and kill.

They run on free loopback ports in temporary folders, so the machine's shared services are never
touched. Tests skip with a reason where the server programs are missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.support.environment import IN_CI, free_port

PG_BIN = Path("/usr/lib/postgresql")


def _pg_tool(name: str) -> str | None:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


def _require(tool: str | None, what: str) -> str:
    if tool is None:
        reason = f"{what} is not installed (Debian: apt-get install postgresql redis-server)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return tool


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root; drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    @staticmethod
    def available() -> bool:
        return _pg_tool("pg_ctl") is not None and _pg_tool("initdb") is not None

    def __init__(self):
        self.pg_ctl = _require(_pg_tool("pg_ctl"), "PostgreSQL (pg_ctl)")
        # Its own folder outside pytest's private tmp tree, which the postgres user cannot enter.
        self.folder, self.port = Path(tempfile.mkdtemp(prefix="portal-pg-")), free_port()
        self.data = self.folder / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        subprocess.run(_as_postgres([_pg_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
                       check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = subprocess.run(_as_postgres([self.pg_ctl, "-D", str(self.data), "-o", options, "-l",
                                               str(self.folder / "pg.log"), "-w", "start"]), capture_output=True)
        if started.returncode != 0:
            log = self.folder / "pg.log"
            raise RuntimeError(f"private PostgreSQL did not start on port {self.port}: "
                               f"{log.read_text()[-800:] if log.exists() else started.stderr.decode()[-800:]}")

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]), capture_output=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRedis:
    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def __init__(self, folder: Path):
        self.binary = _require(shutil.which("redis-server"), "Redis (redis-server)")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # it exited: the port was taken, or it could not start
                raise RuntimeError(f"private Redis did not start on port {self.port} (exit {self.process.returncode})")
            try:
                redis.Redis.from_url(self.url).ping()
            except redis.ConnectionError:
                time.sleep(0.05)
                continue
            if self.process.poll() is None:  # the answer came from our server, not from whoever holds the port
                return
        raise RuntimeError("private Redis did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
