"""The benchmark pages in Chromium: the run page and the comparison draw their uPlot charts
(a line per run and target), at desktop and phone width, without errors or sideways scroll."""

from __future__ import annotations

import pytest

from benchmarks import services
from core.history import ChangeContext
from deployments import services as deployment_services
from tests.benchmarks.support import benchmark_run
from tests.deployments.builders import gguf_variant, qwen

pytestmark = [pytest.mark.browser]


@pytest.mark.parametrize("width", [1280, 390])
def test_run_and_compare_pages_draw_their_charts(
    transactional_db, live_server, page, sign_in, admin_user, password, screenshot, width
):
    ctx = ChangeContext.for_user(admin_user)
    profile = services.create_profile(ctx, name="browser-sweep", spec={"levels": [1, 2]})
    variant = gguf_variant(qwen("fleet-test/bench-browser"))
    deployment = deployment_services.create_deployment(
        ctx, "charted", {"variant": variant.pk, "runtime": "llamacpp"}
    )
    first, second = benchmark_run(deployment, profile), benchmark_run(deployment, profile)
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(admin_user.username, password)

    for path, lines in (
        (f"/benchmarks/runs/{first.pk}/", 1),
        (f"/benchmarks/compare/?ids={first.pk},{second.pk}", 2),
    ):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        page.wait_for_selector("figure[data-chart='output_tokens_per_s'][data-points]")
        charts = page.locator("figure[data-points]")
        assert charts.count() == 4
        assert charts.first.get_attribute("data-points") == str(2 * lines)  # 2 levels a line
        assert page.locator("figure[data-chart] canvas").count() == 4
        assert page.locator("[data-testid='bench-figures'] tbody tr").count() == 2 * lines
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} at {width} px scrolls sideways by {overflow} px"
        screenshot(f"benchmarks-{'run' if lines == 1 else 'compare'}-{width}")
    assert page.js_errors == []  # type: ignore[attr-defined]
