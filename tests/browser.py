"""Fixtures for the browser tests: Debian's chromium driven by Playwright, skipped without it.

Playwright never downloads a browser here: it launches the system's chromium (``.ci/run``
installs it with apt-get). Where no chromium binary exists (a laptop), every test using
``browser`` or ``page`` is skipped, saying why.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    """Return the chromium binary to drive (CONNECTOR_CHROMIUM, then PATH), or None."""
    for candidate in (os.environ.get("CONNECTOR_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium", shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless chromium for this module's tests (skipped when none is installed)."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary found (install Debian's chromium: apt-get install "
                    "chromium, or set CONNECTOR_CHROMIUM to a chromium binary)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed "
                                          "(pip install -e '.[test]')")
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS,
                                          headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (its own cookies), 1280 pixels wide; a JavaScript error or a
    Content-Security-Policy violation fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text)
           if "Content Security Policy" in msg.text else None)
    tab.on("dialog", lambda dialog: dialog.accept())
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save the page as docs/screenshots/<name>.png (the README shows some)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
