"""A real portal process for integration tests: migrated, seeded, served by run.py with eventlet.

Tests talk to it over real HTTP (requests) and real Socket.IO (python-socketio), and sign in
through the built-in development OpenID provider exactly as a browser would.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from audit import generate_signing_key_pem
from portal import create_app
from portal.config import Settings
from portal.crypto import generate_keyring_json
from portal.db import db_session
from portal.migrate import upgrade
from portal.seed import seed_demo
from tests.support.environment import ROOT, free_port

DEMO_PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo", "dr.chen": "chen-demo", "dr.okafor": "okafor-demo",
                  "dr.reyes": "reyes-demo", "cora": "cora-demo", "adam": "adam-demo", "nora": "nora-demo"}


def portal_env(tmp: Path, database_url: str, port: int, **overrides: str) -> dict[str, str]:
    """The PORTAL_* environment of a development portal with fresh secrets under ``tmp``."""
    keyring, signing_key = tmp / "keyring.json", tmp / "audit-signing-key.pem"
    tmp.mkdir(parents=True, exist_ok=True)
    if not keyring.exists():
        keyring.write_text(generate_keyring_json())
        signing_key.write_bytes(_as_bytes(generate_signing_key_pem()))
    base = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update({
        "PORTAL_ENV": "development",
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_EXTERNAL_URL": base,
        "PORTAL_KEYRING": str(keyring),
        "PORTAL_AUDIT_SIGNING_KEY": str(signing_key),
        "PORTAL_DEV_IDP": "1",
        "PORTAL_OIDC_ISSUER": f"{base}/devidp",
        "PORTAL_OIDC_CLIENT_ID": "portal-test",
        "PORTAL_OIDC_CLIENT_SECRET": secrets.token_urlsafe(24),
        "PORTAL_LOGIN_RATE_LIMIT": "1000 per minute",
        "PORTAL_REPORT_RATE_LIMIT": "1000 per minute",
        "PORTAL_METRICS_TOKEN": "test-metrics-token",
        # Tests run side by side on one Redis: each portal (with its extra workers) talks on its own channel.
        "PORTAL_MESSAGE_QUEUE_CHANNEL": f"portal-test-{secrets.token_hex(6)}",
        "PORTAL_LOG_LEVEL": "INFO",
        "PYTHONWARNINGS": "ignore",
    })
    env.update(overrides)
    return env


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def flask_command(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "portal", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare_database(env: dict[str, str], patients: int = 12) -> None:
    """What `flask init-db` and `flask seed-demo` do, in this process to save two interpreter start-ups."""
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    app = create_app(settings)
    with app.app_context():
        seed_demo(settings.oidc_issuer, population=patients)
        db_session.remove()
    app.extensions["portal.engine"].dispose()
    app.extensions["portal.audit_store"].engine.dispose()


class PortalServer:
    """One `python run.py` worker process on a free loopback port."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path):
        self.env, self.port, self.log_path = env, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    @property
    def database(self) -> str:
        """Its database URL (an in-process portal gives its test's connection here instead)."""
        return self.env["PORTAL_DATABASE_URL"]

    def start(self, timeout: float = 30) -> PortalServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "run.py", "--port", str(self.port)], env=self.env, cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"portal exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"portal did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> PortalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        # SIGKILL: a test is over and nothing needs the graceful path (logs are flushed line by line), while
        # SIGINT could wait out the 10 s kill timeout with a browser or an HTTP client holding connections
        # open. Tests of SIGTERM call stop() themselves.
        self.kill()


class _FormParser(HTMLParser):
    """Collects the first form's action and inputs (enough for the sign-in pages)."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action", "")
        if tag == "input" and attrs.get("name") and attrs.get("type") != "submit":
            self.fields.setdefault(attrs["name"], attrs.get("value") or "")


def parse_form(html: str) -> _FormParser:
    parser = _FormParser()
    parser.feed(html)
    return parser


def sign_in(server_url: str, login: str, password: str | None = None,
            session: requests.Session | None = None) -> requests.Session:
    """Sign in through the development provider's form; returns a session holding the portal cookie."""
    session = session or requests.Session()
    form_page = session.get(f"{server_url}/auth/login", timeout=10)
    form_page.raise_for_status()
    form = parse_form(form_page.text)
    form.fields.update(login=login, password=password or DEMO_PASSWORDS[login])
    response = session.post(urljoin(form_page.url, form.action or form_page.url), data=form.fields, timeout=10)
    if response.status_code >= 400 and ("/auth/" in response.url or "/devidp/" in response.url):
        raise AssertionError(f"sign-in as {login} failed with {response.status_code}: {response.text[:500]}")
    return session


def sign_in_again(session: requests.Session, response: requests.Response, login: str) -> requests.Response:
    """Answer the development provider's form that a step-up sent the browser to; returns where it comes back."""
    assert "/devidp/authorize" in response.url and "max_age=" in response.url, f"no step-up sign-in at {response.url}"
    form = parse_form(response.text)
    form.fields.update(login=login, password=DEMO_PASSWORDS[login])
    return session.post(urljoin(response.url, form.action or response.url), data=form.fields, timeout=10)


def get_stepping_up(session: requests.Session, url: str, login: str, **kwargs) -> requests.Response:
    """GET a page that may ask for a fresh sign-in first (audit exports): sign in again when asked."""
    response = session.get(url, timeout=kwargs.pop("timeout", 30), **kwargs)
    if "/devidp/authorize" in response.url:
        response = sign_in_again(session, response, login)
    return response


def break_glass(session: requests.Session, server_url: str, patient_id: str, reason: str, login: str) -> requests.Response:
    """Open a chart with break-glass as a clinician does: the reason, a fresh sign-in, then the confirmation."""
    url = f"{server_url}/patients/{patient_id}/break-glass"
    token = csrf_token(session, f"{server_url}/")
    asked = session.post(url, data={"csrf_token": token, "reason": reason}, timeout=10)
    confirm = sign_in_again(session, asked, login)
    assert 'id="step-up-confirmed"' in confirm.text, confirm.text[:500]
    return session.post(url, data={"csrf_token": parse_form_token(confirm.text), "reason": reason}, timeout=10)


def parse_form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def csrf_token(session: requests.Session, page_url: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', session.get(page_url, timeout=10).text)
    assert match, "page has no CSRF token"
    return match.group(1)


@contextmanager
def running_portal(tmp: Path, database_url: str, patients: int = 12, **overrides: str) -> Iterator[PortalServer]:
    """Migrate and seed ``database_url``, then serve it; for tests that need PostgreSQL or special settings."""
    port = free_port()
    env = portal_env(tmp, database_url, port, **overrides)
    prepare_database(env, patients)
    with PortalServer(env, port, tmp / f"server-{port}.log") as server:
        yield server


def another_worker(first: PortalServer) -> PortalServer:
    """A second worker of the same portal (same settings and database) on its own port, not yet started."""
    port = free_port()
    return PortalServer(first.env, port, first.log_path.with_name(f"server-{port}.log"))


def raw_request(server_url: str, method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> int:
    """Send bytes no HTTP client library would (a NUL in a header, say) on a plain socket; returns the status."""
    address = urlsplit(server_url)
    lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {address.netloc}".encode(), b"Connection: close",
             f"Content-Length: {len(body)}".encode(), *(name.encode() + b": " + value for name, value in headers.items())]
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return int(response.split(b" ", 2)[1])


def cookie_header(session: requests.Session) -> bytes:
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items()).encode()
