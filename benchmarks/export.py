"""Benchmark figures as flat rows (CSV export, the compare table) and as chart series."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from benchmarks.models import BenchmarkRun

COLUMNS = (
    "run",
    "deployment",
    "target",
    "revision",
    "node",
    "node_kind",
    "variant",
    "runtime",
    "level",
    "concurrency",
    "rate",
    "requests",
    "completed",
    "errors",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "requests_per_s",
    "output_tokens",
    "prompt_tokens",
    "tokens_from",
    "replica_cpu_percent_mean",
    "replica_memory_bytes_max",
    "gpu_utilization_percent_mean",
    "gpu_memory_used_bytes_max",
    "generator_cpu_percent",
)


def _replica_usage(usage: dict[str, Any], key: str, stat: str) -> float | None:
    values = [r[key][stat] for r in usage.get("replicas") or [] if r.get(key, {}).get(stat)]
    if not values:
        return None
    return round(sum(values), 2) if stat == "mean" else max(values)


def rows(run: BenchmarkRun) -> list[dict[str, Any]]:
    targets = {t["label"]: t for t in run.targets}
    out = []
    for result in run.results:
        t = targets.get(result["target"], {})
        for level in result["levels"]:
            usage = level.get("usage") or {}
            gpu_util = usage.get("gpu_utilization_percent") or {}
            gpu_mem = usage.get("gpu_memory_used_bytes") or {}
            row: dict[str, Any] = {
                "run": run.pk,
                "deployment": run.deployment_name,
                "target": result["target"],
                "revision": t.get("revision"),
                "node": t.get("node"),
                "node_kind": t.get("node_kind"),
                "variant": t.get("variant_name"),
                "runtime": t.get("runtime"),
                "level": level["label"],
                "concurrency": level.get("concurrency"),
                "rate": level.get("rate"),
                "requests": level["requests"],
                "completed": level["completed"],
                "errors": level["errors"],
                "output_tokens_per_s": level["output_tokens_per_s"],
                "total_tokens_per_s": level["total_tokens_per_s"],
                "requests_per_s": level["requests_per_s"],
                "output_tokens": level["output_tokens"],
                "prompt_tokens": level["prompt_tokens"],
                "tokens_from": level.get("tokens_from", ""),
                "replica_cpu_percent_mean": _replica_usage(usage, "cpu_percent", "mean"),
                "replica_memory_bytes_max": _replica_usage(usage, "memory_bytes", "max"),
                "gpu_utilization_percent_mean": gpu_util.get("mean"),
                "gpu_memory_used_bytes_max": gpu_mem.get("max"),
                "generator_cpu_percent": level.get("generator_cpu_percent"),
            }
            for figure in ("ttft", "itl", "latency"):
                for q in ("p50", "p90", "p99"):
                    row[f"{figure}_{q}_ms"] = (level.get(f"{figure}_ms") or {}).get(q)
            out.append(row)
    return out


def csv_text(runs: Iterable[BenchmarkRun]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for run in runs:
        for row in rows(run):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def series(runs: Iterable[BenchmarkRun]) -> list[dict[str, Any]]:
    """One line per run and target for the plots: x = concurrency (or rate), y = figures."""
    lines = []
    for run in runs:
        by_target: dict[str, list[dict[str, Any]]] = {}
        for row in rows(run):
            by_target.setdefault(row["target"], []).append(row)
        for target, points in by_target.items():
            lines.append(
                {
                    "label": f"#{run.pk} {target}",
                    "x": [
                        p["concurrency"] if p["concurrency"] is not None else p["rate"]
                        for p in points
                    ],
                    "output_tokens_per_s": [p["output_tokens_per_s"] for p in points],
                    "ttft_p50_ms": [p["ttft_p50_ms"] for p in points],
                    "latency_p99_ms": [p["latency_p99_ms"] for p in points],
                    "itl_p50_ms": [p["itl_p50_ms"] for p in points],
                }
            )
    return lines
