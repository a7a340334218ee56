"""Permission-matrix rows of the Prometheus export and the console's alerts."""

from __future__ import annotations

from typing import Any

from tests.matrix_kit import api, everyone, page


def check_exposition(response: Any, persona: str, world: Any) -> None:
    if response.status_code == 200:
        text = response.content.decode()
        assert "# TYPE fleet_nodes gauge" in text
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")


def check_targets(response: Any, persona: str, world: Any) -> None:
    if response.status_code == 200:
        assert isinstance(response.json(), list)


def check_alerts(response: Any, persona: str, world: Any) -> None:
    if response.status_code == 200:
        body = response.json()
        assert set(body) == {"evaluated_at", "alerts"}


# Read-only endpoints: a write is refused by role first (viewers), by method after (405).
WRITE_REFUSED: dict[str, Any] = {"admin": 405, "operator": 405, "viewer": 403}

ROWS = [
    api("metrics", "metrics", "GET", "/metrics", **everyone(200), check=check_exposition),
    api("metrics-post", "metrics", "POST", "/metrics", **WRITE_REFUSED),
    api(
        "prometheus-metrics",
        "prometheus-metrics",
        "GET",
        "/api/v1/prometheus/metrics/",
        **everyone(200),
        check=check_exposition,
    ),
    api(
        "prometheus-metrics-post",
        "prometheus-metrics",
        "POST",
        "/api/v1/prometheus/metrics/",
        **WRITE_REFUSED,
    ),
    api(
        "prometheus-targets",
        "prometheus-targets",
        "GET",
        "/api/v1/prometheus/targets/",
        **everyone(200),
        check=check_targets,
    ),
    api(
        "prometheus-targets-post",
        "prometheus-targets",
        "POST",
        "/api/v1/prometheus/targets/",
        **WRITE_REFUSED,
    ),
    api("alerts-api", "alerts-api", "GET", "/api/v1/alerts/", **everyone(200), check=check_alerts),
    api("alerts-api-post", "alerts-api", "POST", "/api/v1/alerts/", **WRITE_REFUSED),
    page("alerts-page", "alerts", "GET", "/alerts/", **everyone(200)),
    page("alerts-list", "alerts-list", "GET", "/alerts/list/", **everyone(200)),
    page("alerts-badge", "alerts-badge", "GET", "/alerts/badge/", **everyone(200)),
]
