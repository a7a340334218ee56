"""Permission-matrix rows of the metrics API (part A: ingestion and chart snapshots)."""

from __future__ import annotations

from tests.matrix_kit import api, everyone

ROWS = [
    # Node agents only (node credential): people and their tokens are not nodes.
    api(
        "agent-metrics",
        "agent-metrics",
        "POST",
        "/api/v1/agent/metrics/",
        **everyone(401),
        body={"rounds": []},
    ),
    api(
        "metrics-snapshot-deployment",
        "metrics-snapshot",
        "GET",
        "/api/v1/metrics/",
        **everyone(200),
        body={"deployment": "{deployment}"},  # a GET: sent as the query string
    ),
    api(
        "metrics-snapshot-node",
        "metrics-snapshot",
        "GET",
        "/api/v1/metrics/",
        **everyone(200),
        body={"node": "{node}", "window": "3600"},
    ),
    api(
        "metrics-snapshot-fleet",
        "metrics-snapshot",
        "GET",
        "/api/v1/metrics/",
        **everyone(200),
        body={"fleet": "true"},
    ),
    api(
        "metrics-snapshot-unnamed",
        "metrics-snapshot",
        "GET",
        "/api/v1/metrics/",
        **everyone(400),  # allowed, but it must name what to show
    ),
]
