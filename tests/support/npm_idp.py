"""Run panva's oidc-provider (tests/oidc_provider) as a real OpenID Provider for tests.

Long because it is the one driver of that provider every test of it shares: the process, its clients and
accounts, and the sign-in steps through its pages and the portal's."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import sqlalchemy as sa

from portal.devidp.users import DEMO_USERS
from tests.support.audit_log import audit_rows
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, portal_env, prepare_database

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
SKIP_REASON = "the npm OpenID Provider needs node and its packages: run `make test` (it runs npm ci in tests/oidc_provider)"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def npm_idp_available() -> bool:
    return shutil.which("node") is not None and (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir()


def require_npm_idp() -> None:
    """Skip the calling test (fail it in CI) when node or the provider's packages are missing."""
    if not npm_idp_available():
        if IN_CI:
            pytest.fail(f"CI must run the OpenID Provider tests: {SKIP_REASON}")
        pytest.skip(SKIP_REASON)


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class NpmOidcProvider:
    """A node oidc-provider on a free loopback port, configured by a temp JSON file.

    `clients` are oidc-provider client metadata dicts; `accounts` map sub -> claims
    (name, email, roles, patient_id, ...). `ttl` overrides seconds per artifact
    (AccessToken, AuthorizationCode, IdToken, RefreshToken, Interaction, Session, Grant).
    Signing keys persist in a temp JWKS file across `restart()`.
    """

    def __init__(
        self,
        clients: list[dict[str, Any]],
        accounts: dict[str, dict[str, Any]],
        *,
        ttl: dict[str, int] | None = None,
        claims: dict[str, list[str]] | None = None,
        acr_values: list[str] | None = None,
        login_acr: str | None = None,
        clock_skew_seconds: float = 0,
        startup_timeout: float = 60.0,
    ) -> None:
        self.clients = clients
        self.accounts = accounts
        self.ttl = ttl or {}
        self.claims = claims
        self.acr_values = acr_values or []
        self.login_acr = login_acr
        self.clock_skew_seconds = clock_skew_seconds  # the provider's clock this far ahead (or behind) of ours
        self.startup_timeout = startup_timeout
        self.issuer = ""
        self._port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: Path | None = None

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_path(self) -> Path:
        assert self._tmp is not None, "provider not started"
        return Path(self._tmp.name) / "jwks.json"

    def __enter__(self) -> NpmOidcProvider:
        require_npm_idp()
        self._tmp = tempfile.TemporaryDirectory(prefix="npm-idp-")
        try:
            self._start(rotate_keys=False)
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def restart(self, *, rotate_keys: bool = False) -> None:
        """Restart on the same issuer (sessions are lost); `rotate_keys` puts new signing keys first."""
        self._stop()
        self._start(rotate_keys=rotate_keys)

    def stop(self) -> None:
        """Stop the provider (its issuer stays reserved: `start()` brings it back on the same port)."""
        self._stop()

    def start(self) -> None:
        """Start a provider stopped with `stop()` again, on the same issuer and keys."""
        if self._proc is None:
            self._start(rotate_keys=False)

    def signing_kids(self) -> list[str]:
        """Key ids in the JWKS file, newest first."""
        return [key["kid"] for key in json.loads(self.jwks_path.read_text())["keys"]]

    def _start(self, *, rotate_keys: bool, retried: bool = False) -> None:
        assert self._tmp is not None
        tmp = Path(self._tmp.name)
        config = {
            "host": "127.0.0.1",
            "port": self._port,
            "jwksPath": str(self.jwks_path),
            "rotateKeys": rotate_keys,
            "clients": self.clients,
            "accounts": self.accounts,
            "ttl": self.ttl,
            "acrValues": self.acr_values,
            "loginAcr": self.login_acr,
        }
        if self.claims is not None:
            config["claims"] = self.claims
        config_path = tmp / "config.json"
        config_path.write_text(json.dumps(config))
        self._stderr = tmp / "stderr.log"
        with self._stderr.open("w") as err:
            skew = ["--import", str(PROVIDER_DIR / "skew.mjs")] if self.clock_skew_seconds else []
            self._proc = subprocess.Popen(
                ["node", *skew, str(PROVIDER_DIR / "server.mjs"), str(config_path)],
                cwd=PROVIDER_DIR,
                env={**os.environ, "CLOCK_SKEW_MS": str(int(self.clock_skew_seconds * 1000))},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        line = self._read_ready_line()
        if not line.startswith("ready "):
            self._stop()
            if not retried:  # a start lost to a busy machine (its keys are generated at start): once more
                self._start(rotate_keys=rotate_keys, retried=True)
                return
            raise RuntimeError(f"oidc-provider did not start: {line!r}\n{self._stderr.read_text()}")
        self.issuer = line.split(" ", 1)[1].strip()
        self._port = int(self.issuer.rsplit(":", 1)[1])

    def _read_ready_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        return result[0] if result else f"<no ready line within {self.startup_timeout}s>"

    def _stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def stderr_text(self) -> str:
        return self._stderr.read_text() if self._stderr and self._stderr.exists() else ""


class _FormParser(HTMLParser):
    """Collects each <form>'s action and named inputs (hidden or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "id": a.get("id", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


def _only_form(response: requests.Response, form_id: str | None = None) -> tuple[str, dict[str, str]]:
    parser = _FormParser()
    parser.feed(response.text)
    forms = [f for f in parser.forms if form_id is None or f["id"] == form_id]
    if len(forms) != 1:
        raise AssertionError(f"expected one form at {response.url} (HTTP {response.status_code}), found {len(forms)}")
    return urljoin(response.url, forms[0]["action"]), dict(forms[0]["fields"])


def _follow_to_page(session: requests.Session, response: requests.Response) -> requests.Response:
    """Follow the provider's redirects until a page (not a redirect) is returned."""
    for _ in range(10):
        if not response.is_redirect:
            return response
        response = session.get(urljoin(response.url, response.headers["Location"]), allow_redirects=False)
    raise AssertionError("too many redirects inside the OpenID Provider")


def _resume(session: requests.Session, response: requests.Response, redirect_prefix: str) -> requests.Response:
    """Follow provider-internal redirects, stopping at the redirect to the client (not followed)."""
    for _ in range(10):
        if not response.is_redirect:
            return response
        location = urljoin(response.url, response.headers["Location"])
        if not location.startswith(redirect_prefix):
            return response
        response = session.get(location, allow_redirects=False)
    raise AssertionError("too many redirects inside the OpenID Provider")


def sign_in_with_requests(session: requests.Session, authorize_url: str, login: str) -> requests.Response:
    """Sign `login` in (any password) and consent; return the redirect to the client, not followed.

    `authorize_url` is the provider's /auth URL, or the portal's URL that redirects there.
    The returned response is a 303 whose Location is the client's redirect_uri with
    code/state/iss, ready to be handed to the portal.
    """
    page = _follow_to_page(session, session.get(authorize_url, allow_redirects=False))
    if "/interaction/" not in page.url:
        raise AssertionError(f"expected the provider's sign-in page, got HTTP {page.status_code} at {page.url}")
    issuer_prefix = page.url.split("/interaction/", 1)[0] + "/"
    for _ in range(4):
        action, fields = _only_form(page)
        prompt = fields.get("prompt")
        if prompt == "login":
            fields.update(login=login, password="any-password")
        elif action.endswith("/session/end/confirm"):
            pass  # another person signs in: the provider first ends the previous person's session
        elif prompt != "consent":
            raise AssertionError(f"unexpected interaction prompt {prompt!r} at {page.url}")
        response = _resume(session, session.post(action, data=fields, allow_redirects=False), issuer_prefix)
        if response.is_redirect:
            return response
        page = response
    raise AssertionError(f"sign-in did not finish: HTTP {page.status_code} at {page.url}\n{page.text[:500]}")


def sign_out_with_requests(session: requests.Session, end_session_url: str) -> requests.Response:
    """Confirm RP-initiated logout; return the redirect to post_logout_redirect_uri (or the success page)."""
    page = _follow_to_page(session, session.get(end_session_url, allow_redirects=False))
    action, fields = _only_form(page, "op.logoutForm")
    fields["logout"] = "yes"
    return session.post(action, data=fields, allow_redirects=False)


# --- Helpers for running the portal against the npm provider -------------------------------------------------

PORTAL_SCOPES = "openid profile email roles patient_id"


def demo_accounts(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The portal's demo people as npm-provider accounts keyed by subject (``demo-alice`` ...).

    ``overrides`` (keyed by subject with ``-`` written as ``_``, e.g. ``demo_alice``) replace claims.
    """
    accounts = {}
    for user in DEMO_USERS:
        claims: dict[str, Any] = {"name": user.name, "email": user.email, "email_verified": True,
                                  "roles": list(user.roles)}
        if user.mrn:
            claims["patient_id"] = user.mrn  # the portal's default patient claim carries the chart's MRN
        claims.update(overrides.get(user.subject.replace("-", "_"), {}))
        accounts[user.subject] = claims
    return accounts


def portal_client(client_id: str, client_secret: str, portal_url: str, alg: str = "RS256") -> dict[str, Any]:
    """oidc-provider client metadata for a portal served at ``portal_url``."""
    return {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": [f"{portal_url}/auth/callback"],
        "post_logout_redirect_uris": [f"{portal_url}/"],
        "id_token_signed_response_alg": alg,
    }


def portal_oidc_env(issuer: str, client_id: str, client_secret: str) -> dict[str, str]:
    """PORTAL_* overrides for ``portal_env`` that point the portal at an external provider."""
    return {
        "PORTAL_DEV_IDP": "0",
        "PORTAL_OIDC_ISSUER": issuer,
        "PORTAL_OIDC_CLIENT_ID": client_id,
        "PORTAL_OIDC_CLIENT_SECRET": client_secret,
        "PORTAL_OIDC_SCOPES": PORTAL_SCOPES,
    }


def portal_callback_url(portal_url: str, login: str, session: requests.Session | None = None,
                        next_path: str | None = None) -> tuple[requests.Session, str]:
    """Start sign-in at the portal and sign ``login`` in at the provider; return the callback URL, not visited."""
    session = session or requests.Session()
    start = f"{portal_url}/auth/login" + (f"?next={next_path}" if next_path else "")
    redirect = sign_in_with_requests(session, start, login)
    location = redirect.headers["Location"]
    if not location.startswith(f"{portal_url}/auth/callback"):
        raise AssertionError(f"the provider redirected elsewhere: {location}")
    return session, location


def sign_in_portal(portal_url: str, login: str, session: requests.Session | None = None,
                   headers: dict[str, str] | None = None) -> tuple[requests.Session, requests.Response]:
    """Full sign-in at a portal that uses the npm provider; returns the session and the callback response."""
    session, callback = portal_callback_url(portal_url, login, session)
    return session, session.get(callback, headers=headers, allow_redirects=False, timeout=15)


def start_portals(*servers: Any) -> None:
    """Start several PortalServer processes at once (each start waits for its /healthz)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()




def table_count(database_url: str, table: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def assert_signin_refused(portal_url: str, database_url: str, session: requests.Session, response: requests.Response,
                          status: int | tuple[int, ...], reason: str, request_id: str) -> None:
    """A refused sign-in: the error page with ``status``, no session, one `signin.failure` audit with ``reason``."""
    statuses = (status,) if isinstance(status, int) else status
    shown = re.search(r'data-error-code="([^"]*)"', response.text)
    assert response.status_code in statuses, f"HTTP {response.status_code}: {response.text[:400]}"
    assert shown is not None, f"no error page: {response.text[:400]}"
    assert shown.group(1) == reason, f"refused with {shown.group(1)!r}, expected {reason!r}"
    me = session.get(f"{portal_url}/api/v1/me", timeout=10)
    assert me.status_code == 401, f"a refused sign-in left a working session: {me.text[:200]}"
    events = audit_rows(database_url, request_id=request_id)
    found = [(e["action"], e["outcome"], e["reason"]) for e in events]
    assert found == [("signin.failure", "denied", reason)], f"audit events for the request: {found}"


def stop_portals(*servers: Any) -> None:
    """Stop portal processes at once: a test is over, and SIGTERM's graceful path can take the full 10 s
    kill timeout."""
    for server in servers:
        server.kill()


@contextlib.contextmanager
def dev_portal(tmp: Path, **overrides: str) -> Iterator[Any]:
    """A migrated, seeded portal on SQLite using the built-in development provider (like conftest's `portal`)."""
    port = free_port()
    env = portal_env(tmp, f"sqlite:///{tmp / 'portal.db'}", port, **overrides)
    prepare_database(env)
    server = PortalServer(env, port, tmp / f"server-{port}.log").start()
    try:
        yield server
    finally:
        stop_portals(server)
