"""The console in a real browser: sign-in, navigation, API tokens and the history."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

pytestmark = [pytest.mark.browser]

# (data-nav, expected heading text, path the link ends on). Settings redirects to its
# first tab, API tokens.
NAV = [
    ("overview", "Overview", "/"),
    ("catalog", "Catalog", "/catalog/"),
    ("nodes", "Nodes", "/nodes/"),
    ("jobs", "Jobs", "/jobs/"),
    ("deployments", "Deployments", "/deployments/"),
    ("gateway", "Gateway", "/gateway/"),
    ("benchmarks", "Benchmarks and test suites", "/benchmarks/"),
    ("alerts", "Alerts", "/alerts/"),
    ("history", "History", "/history/"),
    ("settings", "Settings", "/settings/tokens/"),
]


def assert_page_ok(page, response, url_path: str, heading: str) -> None:
    """A console page rendered fine: 200, the expected heading, no error page."""
    assert response is not None and response.status == 200, (
        f"{url_path}: HTTP {response and response.status}"
    )
    assert urlsplit(page.url).path == url_path, page.url
    assert heading in page.inner_text("header.topbar h1")
    body = page.inner_text("body")
    for marker in ("Server Error", "Traceback", "Not allowed", "Page not found"):
        assert marker not in body, f"{url_path} shows {marker!r}"
    assert page.js_errors == [], f"{url_path}: uncaught JavaScript errors {page.js_errors}"


def api_me(live_server, key: str) -> requests.Response:
    return requests.get(
        f"{live_server.url}/api/v1/me/",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_admin_walks_the_console_and_manages_a_token(
    transactional_db, live_server, admin_user, password, page, sign_in, screenshot
):
    landed = sign_in(admin_user.username, password)
    assert_page_ok(page, landed, "/", "Overview")
    assert page.inner_text("[data-testid=current-user]") == "alice"

    # --- every entry of the sidebar navigation ------------------------------------------
    links = page.locator("aside.sidebar nav a")
    assert [links.nth(i).get_attribute("data-nav") for i in range(links.count())] == [
        name for name, _, _ in NAV
    ]
    for name, heading, url_path in NAV:
        with page.expect_navigation() as navigation:
            page.click(f"aside.sidebar nav a[data-nav={name}]")
        assert_page_ok(page, navigation.value, url_path, heading)
        active = page.locator("aside.sidebar nav a.active")
        assert active.count() == 1, f"{name}: {active.count()} active nav items"
        assert active.get_attribute("data-nav") == name
        screenshot(name)

    # --- create a token through Settings → API tokens -----------------------------------
    page.goto(f"{live_server.url}/settings/tokens/")
    page.fill("#id_name", "browser-token")
    page.select_option("#id_scope", label="Read and write")
    page.select_option("#id_expires_in", label="Never")
    page.fill("#id_reason", "browser test")
    with page.expect_navigation() as navigation:
        page.click("form:has(#id_name) button[type=submit]")
    # A successful create answers 201 and renders the one-time key on the same page.
    assert navigation.value.status == 201, page.inner_text("main")
    key = page.inner_text("[data-testid=new-token] code").strip()
    assert key.startswith("slmf_"), key
    row = page.locator("tr[data-token='browser-token']")
    assert row.count() == 1
    assert "active" in row.inner_text()
    assert "Read and write" in row.inner_text()
    screenshot("token-created")

    # The key really authenticates against the API.
    me = api_me(live_server, key)
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "alice"
    assert me.json()["token_scope"] == "write"

    # --- revoke it (the form asks for confirmation first) -------------------------------
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    with page.expect_navigation() as navigation:
        row.get_by_role("button", name="Revoke").click()
    assert navigation.value.status == 200
    assert len(dialogs) == 1 and "browser-token" in dialogs[0], dialogs
    row = page.locator("tr[data-token='browser-token']")
    assert "revoked" in row.inner_text()
    assert row.get_by_role("button", name="Revoke").count() == 0
    assert "revoked" in page.inner_text(".messages")
    screenshot("token-revoked")

    assert api_me(live_server, key).status_code == 401

    # --- the history shows both changes, with the reason --------------------------------
    response = page.goto(f"{live_server.url}/history/")
    assert_page_ok(page, response, "/history/", "History")
    rows = page.locator("#timeline-body tr").filter(has_text="browser-token")
    # Columns: when, who, verb, target, reason, link to the diff.
    events = [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]
    by_verb = {cells[2].strip(): cells for cells in events}
    assert {"created", "revoked"} <= set(by_verb), events
    for cells in by_verb.values():
        assert "browser-token" in cells[3] and "alice" in cells[1], cells
    assert by_verb["created"][4].strip() == "browser test"
    assert "browser test" in page.inner_text("#timeline-body")
    screenshot("history")


def test_wrong_password_shows_an_error_and_stays_signed_out(
    transactional_db, live_server, admin_user, page, sign_in, screenshot
):
    response = sign_in(admin_user.username, "not-the-password-at-all")
    assert response.status == 200
    assert page.url.startswith(f"{live_server.url}/login/")
    error = page.locator("ul.errorlist.nonfield")
    assert error.count() == 1
    assert "correct" in error.inner_text().lower()  # Django: "Please enter a correct …"
    screenshot("login-wrong-password")

    # Still signed out: a console page sends us back to the login form.
    page.goto(f"{live_server.url}/")
    assert page.url.startswith(f"{live_server.url}/login/")
    assert page.locator("aside.sidebar").count() == 0
    assert page.js_errors == []


def test_viewer_gets_the_not_allowed_page_for_user_management(
    transactional_db, live_server, viewer_user, password, page, sign_in, screenshot
):
    landed = sign_in(viewer_user.username, password)
    assert_page_ok(page, landed, "/", "Overview")

    response = page.goto(f"{live_server.url}/settings/users/")
    assert response.status == 403
    assert "Not allowed" in page.inner_text("main")
    # The page keeps the console frame (navigation, signed-in user).
    assert page.inner_text("[data-testid=current-user]") == "victor"
    screenshot("viewer-users-403")


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_at_desktop_and_phone_width(
    transactional_db, live_server, browser, admin_user, password, width
):
    """A full-page screenshot of each page (var/test/artifacts/screenshots/<page>-<width>.png):
    nothing overflows sideways, and on a wide screen the sidebar's colour runs the whole page."""
    from tests.browser.conftest import DEFAULT_TIMEOUT_MS, SCREENSHOTS

    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page.js_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))  # type: ignore[attr-defined]
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", admin_user.username)
        page.fill("#id_password", password)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, heading, url_path in NAV:
            response = page.goto(f"{live_server.url}{url_path}")
            assert_page_ok(page, response, url_path, heading)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{url_path} at {width} px scrolls sideways by {overflow} px"
            if width > 760:
                painted = page.evaluate("getComputedStyle(document.body).backgroundImage")
                assert "linear-gradient" in painted, (url_path, painted)
    finally:
        context.close()
