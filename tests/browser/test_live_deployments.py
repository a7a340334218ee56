"""The deployment page follows a rollout live over its WebSocket (real ASGI server, Redis
channel layer, Chromium): the replica's state changes on the page without a reload and well
before the page's 30 s safety refresh."""

from __future__ import annotations

import random

import pytest
from django.core.cache import cache
from django.db import connection

from tests.browser.asgi import ServedAsgi
from tests.deployments.builders import gguf_variant, holds
from tests.deployments.conftest import START, Fleet, Orders
from tests.deployments.test_reconciler_db import deploy

pytestmark = pytest.mark.browser


def _spread_deployment_ids() -> None:
    """Channels groups are shared by every database on this Redis: ids nobody else uses."""
    base = random.randrange(10**6, 10**9)  # noqa: S311 - spreading ids, not a secret
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('deployments_deployment', 'id'), %s, false)",
            [base],
        )


def test_the_deployment_page_shows_replica_states_as_they_change(
    transactional_db, settings, admin_user, viewer_user, password, page, screenshot
):
    cache.clear()
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    _spread_deployment_ids()
    fleet = Fleet(Orders(settings.REDIS_URL))
    variant = gguf_variant(size=50_000_000)
    node = fleet.node("live-node")
    holds(node, variant)
    deployment = deploy(admin_user, variant, "live-page")
    sent = fleet.step(0, deployment)
    (start,) = [order for order in sent if order.task == START]

    with ServedAsgi() as server:
        page.goto(f"{server.url}/login/")
        page.fill("#id_username", viewer_user.username)
        page.fill("#id_password", password)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        page.goto(f"{server.url}/deployments/{deployment.pk}/")
        row = page.locator(f'tr[data-replica="{start.replica_id}"]')
        assert row.locator(".badge").inner_text() == "starting"
        page.wait_for_selector("#live-status.connected", timeout=10_000)

        fleet.act([start])  # the agent reports the replica healthy
        page.wait_for_function(
            """(selector) => {
                const badge = document.querySelector(selector);
                return badge && badge.textContent.trim() === 'healthy';
            }""",
            arg=f'tr[data-replica="{start.replica_id}"] .badge',
            timeout=5_000,  # the safety refresh would take up to 30 s
        )
        assert "healthy since" in row.inner_text()
        screenshot("deployment-live-healthy")
        assert page.js_errors == []  # type: ignore[attr-defined]
