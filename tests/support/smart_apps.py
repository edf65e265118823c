"""Apps connecting to a real portal over SMART on FHIR: registration, the person's browser part, the app's part.

The app's side is a standard client library (``fhirclient`` for a confidential app, Authlib's
``OAuth2Session`` for a public one); the person's side is a ``requests.Session`` that signs in at the
portal's OpenID provider and answers the consent page, the way a browser would.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests

from tests.support.npm_idp import sign_in_with_requests
from tests.support.portal_server import flask_command

APP_REDIRECT = "http://127.0.0.1:9/app/callback"  # never contacted: the tests read the Location header
FULL_SCOPES = "launch/patient openid fhirUser offline_access patient/*.rs"


@dataclass(frozen=True)
class RegisteredApp:
    client_id: str
    client_secret: str | None
    redirect_uri: str


def register_app(env: dict[str, str], name: str, *, public: bool = False, redirect_uri: str = APP_REDIRECT,
                 scopes: str = FULL_SCOPES) -> RegisteredApp:
    """``flask --app portal smart-register-app``, as an administrator would run it."""
    args = ["smart-register-app", "--name", name, "--redirect-uri", redirect_uri, "--scopes", scopes]
    output = flask_command(env, *args, *(["--public"] if public else []))
    client_id = re.search(r"^client_id: (\S+)$", output, re.M).group(1)
    secret = re.search(r"^client_secret: (\S+)$", output, re.M)
    return RegisteredApp(client_id, secret.group(1) if secret else None, redirect_uri)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(portal_url: str, app: RegisteredApp, *, scope: str = FULL_SCOPES, state: str = "s-1",
                  **overrides: str | None) -> tuple[str, str]:
    """A standalone-launch authorization URL built by hand (for the refusal tests); returns (url, verifier)."""
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": app.client_id, "redirect_uri": app.redirect_uri, "scope": scope,
              "state": state, "aud": f"{portal_url}/fhir", "code_challenge": challenge,
              "code_challenge_method": "S256", **overrides}
    return f"{portal_url}/oauth/authorize?{urlencode({k: v for k, v in params.items() if v is not None})}", verifier


class _ConsentForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.action = ""
        self.fields: dict[str, str] = {}
        self.types: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and "consent" in (attrs.get("class") or ""):
            self.inside, self.action = True, attrs.get("action") or ""
        elif self.inside and tag == "input":
            if attrs.get("name") == "resource_type":
                self.types.append(attrs["value"])
            elif attrs.get("name"):
                self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def open_consent(person: requests.Session, url: str, login: str | None = None) -> requests.Response:
    """Follow the authorization URL as a browser does: sign in at the provider when asked; return where it ends
    (the consent page, an error page, or a redirect towards the app, not followed)."""
    response = person.get(url, allow_redirects=False, timeout=15)
    for _ in range(10):
        if not response.is_redirect:
            return response
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith(APP_REDIRECT.rsplit("/", 2)[0] + "/"):
            return response
        if "/auth/login" in location and login is not None:
            callback = sign_in_with_requests(person, location, login).headers["Location"]
            response = person.get(callback, allow_redirects=False, timeout=15)
            continue
        response = person.get(location, allow_redirects=False, timeout=15)
    raise AssertionError(f"too many redirects from {url}")


def consent_types(page: requests.Response) -> list[str]:
    form = _ConsentForm()
    form.feed(page.text)
    return form.types


def decide(person: requests.Session, page: requests.Response, *, allow: bool = True,
           untick: tuple[str, ...] = ()) -> str:
    """Answer the consent page; returns where the portal sends the browser (the app's redirect URI)."""
    form = _ConsentForm()
    form.feed(page.text)
    assert form.action, f"no consent form at {page.url}: {page.text[:300]}"
    data = [*form.fields.items(), ("decision", "allow" if allow else "deny"),
            *(("resource_type", t) for t in form.types if t not in untick)]
    answer = person.post(urljoin(page.url, form.action), data=data, allow_redirects=False, timeout=15)
    assert answer.status_code == 302, f"HTTP {answer.status_code}: {answer.text[:300]}"
    return answer.headers["Location"]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def exchange(portal_url: str, app: RegisteredApp, code: str, verifier: str | None, **extra: str) -> requests.Response:
    """The token request a client sends for a code (client authentication by Basic for confidential apps)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri, **extra}
    if verifier is not None:
        data["code_verifier"] = verifier
    auth = (app.client_id, app.client_secret) if app.client_secret else None
    if auth is None:
        data["client_id"] = app.client_id
    return requests.post(f"{portal_url}/oauth/token", data=data, auth=auth, timeout=15)


def refresh(portal_url: str, app: RegisteredApp, refresh_token: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    auth = (app.client_id, app.client_secret) if app.client_secret else None
    if auth is None:
        data["client_id"] = app.client_id
    return requests.post(f"{portal_url}/oauth/token", data=data, auth=auth, timeout=15)


def fhir_get(portal_url: str, path: str, token: str | None, **params: str) -> requests.Response:
    headers = {"Accept": "application/fhir+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = path if path.startswith("http") else f"{portal_url}/fhir/{path}"
    return requests.get(url, params=params or None, headers=headers, timeout=15)
