"""Which live charts each page shows (rendered by ``templates/monitoring/_charts.html``).

A chart lists metric names and a mode: ``series`` draws one line per series (per replica,
per GPU), ``sum`` one line per name summed over series (the fleet overview).
"""

from __future__ import annotations

import json
from typing import Any

from monitoring.choices import NodeMetric as N
from monitoring.choices import ReplicaMetric as R

DEPLOYMENT_CHARTS: list[dict[str, Any]] = [
    {"title": "Generated tokens/s", "names": [R.GENERATED_TOKENS_PER_S], "mode": "series"},
    {"title": "Prompt tokens/s", "names": [R.PROMPT_TOKENS_PER_S], "mode": "series"},
    {
        "title": "Requests running / waiting",
        "names": [R.REQUESTS_RUNNING, R.REQUESTS_WAITING],
        "mode": "series",
    },
    {
        "title": "Latency (s): per token, time to first token",
        "names": [R.TIME_PER_TOKEN_S, R.TIME_TO_FIRST_TOKEN_S],
        "mode": "series",
    },
    {"title": "Container CPU % (of one core)", "names": [R.CPU_PERCENT], "mode": "series"},
    {"title": "Container memory (bytes)", "names": [R.MEMORY_BYTES], "mode": "series"},
]

NODE_CHARTS: list[dict[str, Any]] = [
    {"title": "CPU %", "names": [N.CPU_PERCENT], "mode": "series"},
    {"title": "RAM used (bytes)", "names": [N.MEMORY_USED_BYTES], "mode": "series"},
    {"title": "Disk used (bytes)", "names": [N.DISK_USED_BYTES], "mode": "series"},
    {"title": "GPU utilisation %", "names": [N.GPU_UTILIZATION_PERCENT], "mode": "series"},
    {"title": "GPU memory used (bytes)", "names": [N.GPU_MEMORY_USED_BYTES], "mode": "series"},
    {"title": "GPU temperature (°C)", "names": [N.GPU_TEMPERATURE_C], "mode": "series"},
    {
        "title": "Replicas: generated tokens/s",
        "names": [R.GENERATED_TOKENS_PER_S],
        "mode": "series",
    },
]

FLEET_CHARTS: list[dict[str, Any]] = [
    {"title": "Fleet generated tokens/s", "names": [R.GENERATED_TOKENS_PER_S], "mode": "sum"},
    {
        "title": "Fleet requests running / waiting",
        "names": [R.REQUESTS_RUNNING, R.REQUESTS_WAITING],
        "mode": "sum",
    },
    {"title": "Node CPU %", "names": [N.CPU_PERCENT], "mode": "series"},
    {"title": "GPU utilisation %", "names": [N.GPU_UTILIZATION_PERCENT], "mode": "series"},
]


def chart_context(kind: str, pk: int | None = None) -> dict[str, Any]:
    """Template context for ``monitoring/_charts.html``: kind is deployment, node or fleet."""
    if kind == "deployment":
        charts, group, query = DEPLOYMENT_CHARTS, f"deployment.{pk}", f"deployment={pk}"
    elif kind == "node":
        charts, group, query = NODE_CHARTS, f"node.{pk}", f"node={pk}"
    elif kind == "fleet":
        charts, group, query = FLEET_CHARTS, "fleet", "fleet=true"
    else:
        raise ValueError(f"no charts for {kind!r}")
    names = sorted({str(name) for chart in charts for name in chart["names"]})
    plain = [{**chart, "names": [str(n) for n in chart["names"]]} for chart in charts]
    return {
        "charts": plain,
        "charts_json": json.dumps(plain),
        "group": group,
        "query": f"{query}&names={','.join(names)}",
        "window_s": 900,
        "kind": kind,
    }
