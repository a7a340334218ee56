"""The gateway's live figures for the console, summed over every gateway process."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings

from gateway.runtime import LIVE_KEY, LIVE_STALE_S, local_gateway

log = logging.getLogger(__name__)


def summaries(max_age: float = LIVE_STALE_S) -> tuple[list[dict[str, Any]], str]:
    """(every gateway process's summary at most ``max_age`` s old, a problem or "")."""
    if not settings.REDIS_URL:
        return local_gateway.summaries(), ""
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            raw = client.hgetall(LIVE_KEY)
        finally:
            client.close()
    except Exception as exc:
        log.warning("reading the gateway's live figures failed: %s", exc)
        return [], f"Live figures are unavailable: Redis cannot be reached ({exc})."
    now = time.time()
    found = []
    for value in raw.values():
        try:
            summary = json.loads(value)
        except ValueError:
            continue
        if now - float(summary.get("at", 0)) <= max_age:
            found.append(summary)
    return found, ""


def fleet_figures() -> dict[str, Any]:
    """Per deployment: requests/s, errors/s, in flight, totals, p50/p99 (worst process)."""
    found, problem = summaries()
    deployments: dict[str, dict[str, Any]] = {}
    for summary in found:
        for name, figures in summary.get("deployments", {}).items():
            merged = deployments.setdefault(
                name,
                {
                    "deployment": name,
                    "requests": 0,
                    "errors": 0,
                    "in_flight": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "requests_per_s": 0.0,
                    "errors_per_s": 0.0,
                    "p50_ms": None,
                    "p99_ms": None,
                },
            )
            for field in (
                "requests",
                "errors",
                "in_flight",
                "prompt_tokens",
                "completion_tokens",
                "requests_per_s",
                "errors_per_s",
            ):
                merged[field] += figures.get(field) or 0
            for field in ("p50_ms", "p99_ms"):
                value = figures.get(field)
                if value is not None and (merged[field] is None or value > merged[field]):
                    merged[field] = value
    rows = sorted(
        deployments.values(), key=lambda row: (row["deployment"] == "-", row["deployment"])
    )
    for row in rows:
        row["requests_per_s"] = round(row["requests_per_s"], 2)
        row["errors_per_s"] = round(row["errors_per_s"], 2)
    return {
        "processes": len(found),
        "deployments": rows,
        "ejected_replicas": sorted(
            {rid for summary in found for rid in summary.get("ejected_replicas", [])}
        ),
        "problem": problem,
    }
