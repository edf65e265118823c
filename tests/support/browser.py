"""Headless Chromium from Debian's package, driven by Playwright (no Playwright browser download)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
]
SKIP_REASON = "install Debian's chromium: `make test` runs `apt-get install -y chromium` when missing"
AXE_JS = Path(__file__).resolve().parents[1] / "e2e" / "vendor" / "axe.min.js"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def require_chromium() -> None:
    """Skip the calling test (fail it in CI) when Chromium is missing."""
    if not chromium_available():
        if IN_CI:
            pytest.fail(f"CI must run the browser tests: {SKIP_REASON}")
        pytest.skip(SKIP_REASON)


def launch_chromium(playwright: Playwright, **options: object) -> Browser:
    """Launch Debian's /usr/bin/chromium headless; extra keyword options go to `launch`."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, **options  # type: ignore[arg-type]
    )
