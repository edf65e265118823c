"""Browser end-to-end fixtures: real portal processes on loopback, Debian's Chromium driven by Playwright.

* ``browser``: one headless Chromium for the whole session (``launch_chromium``).
* ``portal``: a migrated, seeded portal with the development provider, shared by one test module.
* ``npm_portal``: a portal signed in through panva's npm ``oidc-provider`` (its own login form).
* ``new_page(login=None, viewport=DESKTOP)``: a page in a fresh browser context (its own cookies),
  optionally signed in through the development provider's form. Every page is watched: an uncaught
  script error or a Content-Security-Policy violation fails the test.
* ``sign_in``, ``check_accessibility`` and ``screenshot`` are plain helpers the journeys import.

Screenshots go to ``docs/screenshots/<name>.png`` when PORTAL_SCREENSHOTS is set (``make screenshots``)
and to a temporary directory otherwise, so a normal test run never touches the working tree.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.browser import AXE_JS, launch_chromium, require_chromium
from tests.support.environment import ROOT, free_port
from tests.support.portal_server import DEMO_PASSWORDS, PortalServer, portal_env, prepare_database, running_portal

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ALICE_MRN = "RC-100001"
TIMEOUT_MS = 10_000
BLOCKING_IMPACTS = {"serious", "critical"}
AXE_ROUTE = "/__e2e__/axe.min.js"  # answered by Playwright from tests/e2e/vendor, never by the portal
_SCREENSHOT_TMP = Path(tempfile.gettempdir()) / "portal-e2e-screenshots"  # overwritten by each run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e drives a browser."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[PortalServer]:
    """A portal with the development provider on a fresh SQLite database, shared by one module."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("e2e-portal")
    with running_portal(tmp, f"sqlite:///{tmp / 'portal.db'}") as server:
        yield server


@dataclass
class NpmStack:
    """A portal whose only provider is the npm oidc-provider (accounts ``demo-alice``, ``demo-chen``...)."""

    portal: PortalServer
    issuer: str
    database_url: str


@pytest.fixture(scope="module")
def npm_portal(tmp_path_factory) -> Iterator[NpmStack]:
    require_chromium()
    from tests.support.npm_idp import NpmOidcProvider, demo_accounts, portal_client, portal_oidc_env, require_npm_idp

    require_npm_idp()
    tmp = tmp_path_factory.mktemp("e2e-npm")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(32)
    database_url = f"sqlite:///{tmp / 'portal.db'}"
    with NpmOidcProvider([portal_client("portal-e2e", secret, url)], demo_accounts()) as idp:
        # The seed keys the demo users' subjects (demo-alice ...) by the configured issuer.
        env = portal_env(tmp, database_url, port, **portal_oidc_env(idp.issuer, "portal-e2e", secret))
        prepare_database(env)
        with PortalServer(env, port, tmp / "portal.log") as server:
            yield NpmStack(server, idp.issuer, database_url)


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    # A shared 2-core machine can take seconds to deliver a live message; a wait is a bound, not a goal.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageProblems:
    """Script errors and CSP violations seen on a page; either fails the test."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))
        page.on("console", lambda msg: self._console(page, msg))

    def _console(self, page: Page, msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(f"{page.url}: {msg.text}")


@pytest.fixture
def new_page(browser: Browser, portal_url: str) -> Iterator[Callable[..., Page]]:
    """Factory: ``new_page(login=None, viewport=DESKTOP)`` opens a page in its own browser context."""
    contexts: list[BrowserContext] = []
    problems = PageProblems()

    def open_page(login: str | None = None, viewport: dict[str, int] | None = None,
                  base_url: str | None = None) -> Page:
        context = browser.new_context(base_url=base_url or portal_url, viewport=viewport or DESKTOP,
                                      accept_downloads=True, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(TIMEOUT_MS)
        # axe is served as if from the page's own origin, so the portal's CSP (script-src 'self') stays on.
        context.route(f"**{AXE_ROUTE}", lambda route: route.fulfill(path=AXE_JS, content_type="text/javascript"))
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        if login:
            sign_in(page, login)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems.errors, "the browser reported problems:\n" + "\n".join(problems.errors)


@pytest.fixture
def portal_url(request: pytest.FixtureRequest) -> str:
    """The base URL new pages open against: the module's ``npm_portal`` if it uses one, else ``portal``."""
    if "npm_portal" in request.fixturenames:
        return request.getfixturevalue("npm_portal").portal.url
    return request.getfixturevalue("portal").url


# --------------------------------------------------------------------------- helpers


def sign_in(page: Page, login: str) -> None:
    """Sign in as a person would through the development provider's form (``/auth/login``)."""
    from playwright.sync_api import expect

    page.goto("/auth/login")
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[login])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_in_again(page: Page, login: str) -> None:
    """A step-up: the development provider's form asks for the password again before a sensitive action."""
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[login])
    page.get_by_role("button", name="Sign in").click()


def sign_in_npm(page: Page, subject: str) -> None:
    """On the npm provider's own pages: its login form (any password), then its consent screen."""
    from playwright.sync_api import expect

    page.locator("input[name=login]").fill(subject)
    page.locator("input[name=password]").fill("any-password")
    page.locator("button[type=submit]").click()
    consent = page.get_by_role("button", name="Continue")
    consent.wait_for()
    consent.click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def check_accessibility(page: Page, name: str) -> None:
    """Run axe-core (WCAG 2.x A/AA rules and best practices) and fail on serious or critical violations."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Not add_script_tag(path=...): that inlines the script, which the portal's CSP rightly blocks.
        origin = page.evaluate("() => location.origin")
        page.add_script_tag(url=origin + AXE_ROUTE)
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary}))}));
    }""")
    blocking = [v for v in result if v["impact"] in BLOCKING_IMPACTS]
    if blocking:
        lines = [f"accessibility violations on {name} ({page.url}):"]
        for violation in blocking:
            lines.append(f"- [{violation['impact']}] {violation['id']}: {violation['help']} ({violation['helpUrl']})")
            for node in violation["nodes"][:8]:
                summary = " ".join((node["summary"] or "").split())
                lines.append(f"    at {node['target']}: {summary}")
        pytest.fail("\n".join(lines), pytrace=False)


def screenshot_dir() -> Path:
    configured = os.environ.get("PORTAL_SCREENSHOTS", "")
    if not configured:
        return _SCREENSHOT_TMP
    path = Path(configured)
    return path if path.is_absolute() else ROOT / path


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page as ``<name>.png`` (docs/screenshots with PORTAL_SCREENSHOTS, else a temp dir)."""
    target = screenshot_dir() / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=full_page, animations="disabled", caret="hide")
    return target


def has_horizontal_overflow(page: Page) -> bool:
    """True when the page scrolls sideways (content wider than the viewport)."""
    return page.evaluate("() => document.documentElement.scrollWidth > document.documentElement.clientWidth + 1")


def read_download(download: Any) -> bytes:
    path = download.path()
    assert path is not None, f"download failed: {download.failure()}"
    return Path(path).read_bytes()


def json_download(download: Any) -> Any:
    return json.loads(read_download(download))
