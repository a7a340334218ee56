"""Browser fixtures: Debian's Chromium driven by Playwright's sync API.

One Chromium per test module (starting it takes a second or two); each test gets a fresh
browser context (its own cookies and storage) and a page in it. Playwright's bundled
browsers are never downloaded: we launch the system Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "var" / "test" / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root in a container without user namespaces
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DEFAULT_TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True, scope="module")
def _allow_orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an asyncio loop running in this thread (through greenlets),
    so Django's async-safety check sees "a running loop" and raises SynchronousOnlyOperation
    on the ORM calls the tests and fixtures make (database flush, personas). Those calls are
    really synchronous and never run inside the loop, so the check is a false alarm here.
    Only the browser tests get this, and only for their duration (database flush included)."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # The loop Playwright runs must be gone before other modules' async tests start,
    # hence one Chromium per module rather than per session.
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run scripts/test, which installs it")
    # Imported here so that collecting the other test folders never needs Playwright.
    from playwright.sync_api import sync_playwright

    # Playwright.launch() already gives Chromium a fresh temporary profile directory
    # (and refuses a --user-data-dir argument), so no profile handling is needed here.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)
    # Uncaught JavaScript exceptions on any page; tests assert this stays empty.
    page.js_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(page) -> Callable[[str], Path]:
    """Save a full-page screenshot as var/test/artifacts/screenshots/<name>.png."""

    def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def sign_in(page, live_server) -> Callable[[str, str], object]:
    """Sign in through the real login form; returns the response of the page landed on."""

    def submit(username: str, password: str) -> object:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        with page.expect_navigation() as navigation:
            page.click("form button[type=submit]")
        return navigation.value

    return submit
