"""Browser end-to-end fixtures: real portal processes on loopback, Debian's Chromium driven by Playwright.

* ``browser``: one headless Chromium for the whole session (``launch_chromium``).
* ``portal``: a migrated, seeded portal with the development provider, shared by one test module.
* ``npm_portal``: a portal signed in through panva's npm ``oidc-provider`` (its own login form).
* ``new_page(login=None, viewport=DESKTOP)``: a page in a fresh browser context (its own cookies),
  optionally signed in through the development provider's form. Every page is watched: an uncaught
  script error or a Content-Security-Policy violation fails the test.
* what journeys do on a page (sign in, check accessibility, screenshots) is in tests/support/pages.py.

Screenshots go to ``docs/screenshots/<name>.png`` when PORTAL_SCREENSHOTS is set (``make screenshots``)
and to a temporary directory otherwise, so a normal test run never touches the working tree.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.support.browser import AXE_JS, launch_chromium, require_chromium
from tests.support.environment import free_port
from tests.support.npm_idp import NpmOidcProvider, demo_accounts, portal_client, portal_oidc_env, require_npm_idp
from tests.support.pages import AXE_ROUTE, DESKTOP, TIMEOUT_MS, sign_in
from tests.support.portal_server import PortalServer, portal_env, prepare_database, running_portal


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
