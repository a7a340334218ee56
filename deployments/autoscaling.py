"""The autoscaling policy of a deployment: part of its spec (``spec["autoscaling"]``).

Off by default. When on, the autoscaler (:mod:`deployments.autoscaler`) owns the desired
replica count between ``min_replicas`` and ``max_replicas``, aiming at ``target`` of one
``metric`` per replica; a manual scale is refused (change the bounds instead). The windows
follow Knative's KPA (a stable and a panic window) and Kubernetes HPA's scale-down
stabilization; docs/autoscaling.md explains each field with a worked example.

Revisions made before autoscaling existed have no ``autoscaling`` key: :func:`policy_of`
reads them as off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from deployments.runtimes.base import RuntimeAdapter


class Metric:
    """What the autoscaler counts per replica (``metric``), and the series each reads."""

    CONCURRENCY = "concurrency"  # requests in flight at the gateway (held ones included)
    QUEUE = "queue"  # requests waiting in the runtime (normalised runtime metrics)
    TOKENS = "tokens_per_second"  # generated tokens/s (normalised runtime metrics)
    CPU = "cpu"  # container CPU, percent of one core (Docker's figure)
    GPU = "gpu"  # utilisation of the replica's GPUs, percent

    CHOICES = (
        (CONCURRENCY, "Concurrent requests per replica (at the gateway)"),
        (QUEUE, "Requests waiting in the runtime per replica"),
        (TOKENS, "Generated tokens/s per replica"),
        (CPU, "CPU % per replica (100 = one core)"),
        (GPU, "GPU utilisation % per replica"),
    )
    # The runtime series a metric needs (concurrency and GPU come from elsewhere).
    SERIES = {QUEUE: "requests_waiting", TOKENS: "generated_tokens_per_s"}
    UNITS = {
        CONCURRENCY: "concurrent requests",
        QUEUE: "waiting requests",
        TOKENS: "tokens/s",
        CPU: "% CPU",
        GPU: "% GPU",
    }


DEFAULT_TARGETS = {Metric.CONCURRENCY: 4.0}
DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "min_replicas": 1,
    "max_replicas": 4,
    "metric": Metric.CONCURRENCY,
    "target": None,
    "stable_window_seconds": 60,
    "panic_window_seconds": 6,
    "panic_threshold": 2.0,
    "scale_down_stabilization_seconds": 300,
    "max_scale_up_rate": 10.0,
    "max_scale_down_rate": 2.0,
    "idle_seconds": 300,
    "cold_start_queue": 100,
    "cold_start_timeout_seconds": 60,
}


class AutoscalingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The policy's fields; cross-field and runtime checks are in :func:`check_policy`."""

    enabled = serializers.BooleanField(default=False)
    min_replicas = serializers.IntegerField(
        min_value=0, max_value=64, default=1, help_text="May be 0: scale to zero when idle."
    )
    max_replicas = serializers.IntegerField(min_value=0, max_value=64, default=4)
    metric = serializers.ChoiceField(choices=Metric.CHOICES, default=Metric.CONCURRENCY)
    target = serializers.FloatField(
        allow_null=True,
        default=None,
        help_text="Per replica, in the metric's unit; empty: 4 for concurrency (required "
        "for the other metrics).",
    )
    stable_window_seconds = serializers.IntegerField(min_value=2, max_value=3600, default=60)
    panic_window_seconds = serializers.IntegerField(min_value=1, max_value=600, default=6)
    panic_threshold = serializers.FloatField(min_value=1.1, max_value=100, default=2.0)
    scale_down_stabilization_seconds = serializers.IntegerField(
        min_value=0, max_value=3600, default=300
    )
    max_scale_up_rate = serializers.FloatField(min_value=1.0, max_value=1000, default=10.0)
    max_scale_down_rate = serializers.FloatField(min_value=1.0, max_value=1000, default=2.0)
    idle_seconds = serializers.IntegerField(min_value=1, max_value=86400, default=300)
    cold_start_queue = serializers.IntegerField(min_value=1, max_value=10000, default=100)
    cold_start_timeout_seconds = serializers.IntegerField(min_value=1, max_value=600, default=60)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                known = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {key: [f"Unknown field; known: {known}."] for key in unknown}
                )
        return super().to_internal_value(data)


def normalized_defaults() -> dict[str, Any]:
    """The policy a spec without one gets (off), as normalisation stores it."""
    return {**DEFAULTS, "target": DEFAULT_TARGETS[Metric.CONCURRENCY]}


def check_policy(
    policy: dict[str, Any], adapter: RuntimeAdapter, args: dict[str, Any], gpus: int
) -> dict[str, str]:
    """Per-field messages for a policy that cannot work (empty when it can); fills the
    default target in ``policy``."""
    errors: dict[str, str] = {}
    metric = policy["metric"]
    if policy["max_replicas"] < 1:
        errors["max_replicas"] = "At least 1: a deployment that may never run serves nothing."
    elif policy["min_replicas"] > policy["max_replicas"]:
        errors["min_replicas"] = (
            f"min_replicas ({policy['min_replicas']}) is above max_replicas "
            f"({policy['max_replicas']})."
        )
    if policy["target"] is None:
        if metric in DEFAULT_TARGETS:
            policy["target"] = DEFAULT_TARGETS[metric]
        else:
            errors["target"] = f"Give a target per replica for the metric {metric}."
    elif policy["target"] <= 0:
        errors["target"] = "The target must be above 0."
    elif metric == Metric.GPU and policy["target"] > 100:
        errors["target"] = "GPU utilisation is a percentage: at most 100."
    if policy["panic_window_seconds"] >= policy["stable_window_seconds"]:
        errors["panic_window_seconds"] = (
            f"Must be shorter than the stable window ({policy['stable_window_seconds']} s)."
        )
    if policy["idle_seconds"] < policy["stable_window_seconds"]:
        errors["idle_seconds"] = (
            f"At least the stable window ({policy['stable_window_seconds']} s): idle is judged "
            "over whole windows."
        )
    label = adapter.label or adapter.name
    needed = Metric.SERIES.get(metric)
    if needed and needed not in adapter.series_for(args):
        exposed = ", ".join(sorted(adapter.series_for(args))) or "no metrics"
        errors["metric"] = (
            f"{label} does not expose {needed} (the {metric} metric needs it); it exposes "
            f"{exposed}. Use concurrency, or cpu."
        )
    if metric == Metric.GPU and not gpus:
        errors["metric"] = (
            f"Replicas of this deployment use no GPU ({label}, resources.gpus = 0): the gpu "
            "metric has nothing to read. Use concurrency, or cpu."
        )
    return errors


@dataclass(frozen=True)
class Policy:
    """A normalised, enabled or not, policy (what the autoscaler and the gateway read)."""

    enabled: bool
    min_replicas: int
    max_replicas: int
    metric: str
    target: float
    stable_window_seconds: int
    panic_window_seconds: int
    panic_threshold: float
    scale_down_stabilization_seconds: int
    max_scale_up_rate: float
    max_scale_down_rate: float
    idle_seconds: int
    cold_start_queue: int
    cold_start_timeout_seconds: int

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))

    def describe(self) -> str:
        """``autoscaled 1–4 on 4 concurrent requests per replica``."""
        unit = Metric.UNITS.get(self.metric, self.metric)
        return (
            f"autoscaled {self.min_replicas}–{self.max_replicas} on {self.target:g} {unit} "
            "per replica"
        )


def policy_of(spec: dict[str, Any] | None) -> Policy:
    """The policy a (stored) spec carries; off for specs made before autoscaling existed."""
    raw = dict(DEFAULTS)
    raw.update((spec or {}).get("autoscaling") or {})
    if raw["target"] is None:
        raw["target"] = DEFAULT_TARGETS.get(raw["metric"], 1.0)
    return Policy(**{key: raw[key] for key in DEFAULTS})


def is_autoscaled(spec: dict[str, Any] | None) -> bool:
    return bool(((spec or {}).get("autoscaling") or {}).get("enabled"))
