"""Browser: the deployment page's chart draws points while requests run.

Everything real: an agent (collecting every second) runs a llama.cpp replica in Docker and
sends its samples to the live server; the page is served by the product's ASGI app under
uvicorn (WebSockets), and the points travel over the Redis channel layer to Chromium.
The screenshot is kept in var/test/artifacts/screenshots/deployment-live-charts.png.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import requests
from django.core.cache import cache

from deployments import services
from tests.browser.asgi import ServedAsgi
from tests.browser.conftest import (  # noqa: F401
    _allow_orm_beside_playwright,
    browser,
    page,
    screenshot,
)
from tests.deployments import e2e
from tests.fleet.agents import wait_until
from tests.monitoring.test_e2e_llamacpp_metrics import start_agent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]


def test_the_deployment_chart_draws_tokens_per_second_while_requests_run(
    stage: e2e.Stage,
    settings,
    viewer_user,
    password,
    page,  # noqa: F811
    screenshot,  # noqa: F811
):
    cache.clear()
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    stage.configure()
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    start_agent(stage.runner, f"chart-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    stop_load = threading.Event()
    try:
        deployment = services.create_deployment(
            stage.ctx, f"chart-{suffix}", e2e.llamacpp_spec(variant, 1)
        )
        why = lambda: e2e.explain(deployment, stage.runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 90, message=why)
        (replica,) = e2e.available(deployment)

        def load() -> None:
            while not stop_load.is_set():
                requests.post(
                    f"http://127.0.0.1:{replica.host_port}/completion",
                    json={"prompt": "Tell me a story", "n_predict": 24},
                    timeout=30,
                )

        with ServedAsgi() as server:
            page.goto(f"{server.url}/login/")
            page.fill("#id_username", viewer_user.username)
            page.fill("#id_password", password)
            with page.expect_navigation():
                page.click("form button[type=submit]")
            page.goto(f"{server.url}/deployments/{deployment.pk}/")
            page.wait_for_selector("#live-status.connected", timeout=10_000)
            threading.Thread(target=load, name="load", daemon=True).start()
            chart = page.locator('[data-chart="0"]')  # generated tokens/s
            page.wait_for_function(
                "(el) => Number(el.dataset.max || 0) > 0 && Number(el.dataset.points) >= 2",
                arg=chart.element_handle(),
                timeout=30_000,
            )
            assert chart.locator("canvas").count() == 1  # uPlot drew it
            assert page.locator("[data-metrics-charts]").get_attribute("data-state") == "live"
            page.wait_for_timeout(1500)  # a few more points for the picture
            screenshot("deployment-live-charts")
            assert page.js_errors == []  # type: ignore[attr-defined]
    finally:
        stop_load.set()
        loop.stop()
        stage.runner.stop_all()
        e2e.remove_containers(stage.docker_client, f"fleet-chart-{suffix}")
