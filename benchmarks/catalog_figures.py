"""The serving figures the catalog's variant comparison shows (models_catalog.serving_figures):
per variant and node kind, the latest succeeded benchmark run's best level (the one with the
most output tokens/s), with its TTFT p50 and p99 latency."""

from __future__ import annotations

from typing import Any

from benchmarks.models import BenchmarkRun
from core.jobs import JobState

SCAN = 500  # the newest succeeded runs looked at


def read(variant_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    wanted = set(variant_ids)
    found: dict[tuple[int, str], dict[str, Any]] = {}
    runs = BenchmarkRun.objects.filter(job__state=JobState.SUCCEEDED).order_by("-created_at")
    for run in runs.only("pk", "targets", "results", "created_at")[:SCAN]:
        levels = {r["target"]: r["levels"] for r in run.results}
        for target in run.targets:
            variant = target.get("variant")
            key = (variant, target.get("node_kind") or "")
            if variant not in wanted or key in found or not levels.get(target["label"]):
                continue
            best = max(levels[target["label"]], key=lambda lv: lv["output_tokens_per_s"])
            found[key] = {
                "node_kind": key[1],
                "run": run.pk,
                "level": best["label"],
                "output_tokens_per_s": best["output_tokens_per_s"],
                "ttft_p50_ms": (best.get("ttft_ms") or {}).get("p50"),
                "latency_p99_ms": (best.get("latency_ms") or {}).get("p99"),
                "runtime": target.get("runtime") or "",
                "measured_at": run.created_at.isoformat(),
            }
    out: dict[int, list[dict[str, Any]]] = {}
    for (variant, _), figures in sorted(found.items(), key=lambda item: item[0][1]):
        out.setdefault(variant, []).append(figures)
    return out
