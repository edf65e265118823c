"""What the browser journeys do on a page: sign in (the development provider's form, a step-up, the npm
provider's pages), check accessibility with axe-core, take screenshots, read downloads."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.environment import ROOT
from tests.support.portal_server import DEMO_PASSWORDS

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000
BLOCKING_IMPACTS = {"serious", "critical"}
AXE_ROUTE = "/__e2e__/axe.min.js"  # answered by Playwright from tests/e2e/vendor, never by the portal
_SCREENSHOT_TMP = Path(tempfile.gettempdir()) / "portal-e2e-screenshots"  # overwritten by each run


def sign_in(page: Page, login: str) -> None:
    """Sign in as a person would through the development provider's form (``/auth/login``)."""
    page.goto("/auth/login")
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[login])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_in_again(page: Page, login: str) -> None:
    """A step-up: the development provider's form asks for the password again before a sensitive action."""
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[login])
    page.get_by_role("button", name="Sign in").click()


def sign_in_npm(page: Page, subject: str) -> None:
    """On the npm provider's own pages: its login form (any password), then its consent screen."""
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
