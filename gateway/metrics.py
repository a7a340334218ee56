"""Gateway metrics: Prometheus (default registry) and live figures for the console.

Prometheus series carry ``deployment`` and ``key`` (the access key's name) labels; their
number is bounded by what operators configure (requests naming unknown models count under
``deployment="-"``). The latency histogram is per deployment only, to keep the number of
series small. The console's live figures come from :class:`LiveStats`: each gateway process
keeps the last minute in memory and publishes a summary to Redis every two seconds; the
console sums the processes' summaries (:func:`gateway.live.fleet_figures`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "slm_gateway_requests",
    "Requests answered by the gateway, by deployment, access key and status code class.",
    ["deployment", "key", "status"],
)
ERRORS = Counter(
    "slm_gateway_errors",
    "Requests that failed, by deployment, access key and reason.",
    ["deployment", "key", "reason"],
)
LATENCY = Histogram(
    "slm_gateway_request_duration_seconds",
    "Time from the request to the last byte of the answer, by deployment.",
    ["deployment"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TTFB = Histogram(
    "slm_gateway_time_to_first_byte_seconds",
    "Time from the request to the first byte of the replica's answer, by deployment.",
    ["deployment"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "slm_gateway_in_flight_requests", "Requests being served now, by deployment.", ["deployment"]
)
TOKENS = Counter(
    "slm_gateway_tokens",
    "Tokens reported by the runtimes, by deployment, access key and kind (prompt, completion).",
    ["deployment", "key", "kind"],
)
RETRIES = Counter(
    "slm_gateway_retries",
    "Requests sent again to another replica after a connection error before the first byte.",
    ["deployment"],
)
EJECTIONS = Counter(
    "slm_gateway_ejections", "Replicas taken out of the pool after a failure.", ["deployment"]
)

WINDOW_S = 60.0
RATE_WINDOW_S = 10.0
MAX_SAMPLES = 20_000


@dataclass
class DeploymentFigures:
    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    samples: deque[tuple[float, float, bool]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES)
    )  # (monotonic end, seconds, error)
    # Requests held by the activator (the deployment is at zero, a replica is starting).
    held: int = 0
    # Concurrency (in flight + held) integrated over time since the last take (autoscaler).
    area: float = 0.0
    marked: float = field(default_factory=time.monotonic)
    window_started: float = field(default_factory=time.monotonic)
    window_requests: int = 0

    def mark(self) -> None:
        now = time.monotonic()
        self.area += (self.in_flight + self.held) * (now - self.marked)
        self.marked = now


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


class LiveStats:
    """This process's recent figures per deployment (what the console shows)."""

    def __init__(self) -> None:
        self.deployments: dict[str, DeploymentFigures] = {}
        self.series: dict[str, tuple[Any, Any]] = {}
        self.request_series: dict[tuple[str, str, int], Any] = {}

    def _figures(self, deployment: str) -> DeploymentFigures:
        figures = self.deployments.get(deployment)
        if figures is None:
            figures = self.deployments[deployment] = DeploymentFigures()
        return figures

    def _series(self, deployment: str) -> tuple[Any, Any]:
        """(in-flight gauge, latency histogram) of a deployment, looked up once."""
        series = self.series.get(deployment)
        if series is None:
            series = self.series[deployment] = (
                IN_FLIGHT.labels(deployment),
                LATENCY.labels(deployment),
            )
        return series

    def _requests(self, deployment: str, key: str, status: int) -> Any:
        name = (deployment, key, status // 100)
        counter = self.request_series.get(name)
        if counter is None:
            counter = self.request_series[name] = REQUESTS.labels(
                deployment, key, f"{status // 100}xx"
            )
        return counter

    def started(self, deployment: str) -> None:
        figures = self._figures(deployment)
        figures.mark()
        figures.in_flight += 1
        figures.window_requests += 1
        self._series(deployment)[0].inc()

    def hold(self, deployment: str, change: int) -> None:
        """A request held at zero (+1) or let go (-1)."""
        figures = self._figures(deployment)
        figures.mark()
        figures.held += change
        if change > 0:
            figures.window_requests += 1

    def take_concurrency(self) -> dict[str, dict[str, float]]:
        """Per deployment, the mean concurrency (in flight + held) since the last take, and
        whether any request came meanwhile; starts the next window."""
        now = time.monotonic()
        taken: dict[str, dict[str, float]] = {}
        for name, figures in self.deployments.items():
            figures.mark()
            seconds = max(1e-6, now - figures.window_started)
            taken[name] = {
                "concurrency": round(figures.area / seconds, 4),
                "held": figures.held,
                "window_requests": figures.window_requests,
            }
            figures.area, figures.window_started, figures.window_requests = 0.0, now, 0
        return taken

    def finished(
        self,
        deployment: str,
        key: str,
        status: int,
        seconds: float,
        *,
        in_flight: bool,
        error: str = "",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        figures = self._figures(deployment)
        if in_flight:
            figures.mark()
            figures.in_flight -= 1
            self._series(deployment)[0].dec()
        figures.requests += 1
        figures.errors += int(bool(error))
        figures.prompt_tokens += prompt_tokens
        figures.completion_tokens += completion_tokens
        figures.samples.append((time.monotonic(), seconds, bool(error)))
        self._requests(deployment, key, status).inc()
        if error:
            ERRORS.labels(deployment, key, error).inc()
        if in_flight:
            self._series(deployment)[1].observe(seconds)
        if prompt_tokens:
            TOKENS.labels(deployment, key, "prompt").inc(prompt_tokens)
        if completion_tokens:
            TOKENS.labels(deployment, key, "completion").inc(completion_tokens)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per deployment: totals, requests/s over 10 s, latency percentiles over 60 s."""
        now = time.monotonic()
        result: dict[str, dict[str, Any]] = {}
        for name, figures in self.deployments.items():
            while figures.samples and figures.samples[0][0] < now - WINDOW_S:
                figures.samples.popleft()
            recent = [s for s in figures.samples if s[0] >= now - RATE_WINDOW_S]
            durations = [s[1] for s in figures.samples]
            p50, p99 = _percentile(durations, 0.5), _percentile(durations, 0.99)
            result[name] = {
                "requests": figures.requests,
                "errors": figures.errors,
                "in_flight": figures.in_flight,
                "prompt_tokens": figures.prompt_tokens,
                "completion_tokens": figures.completion_tokens,
                "requests_per_s": round(len(recent) / RATE_WINDOW_S, 2),
                "errors_per_s": round(sum(1 for s in recent if s[2]) / RATE_WINDOW_S, 2),
                "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "p99_ms": None if p99 is None else round(p99 * 1000, 1),
                "samples": len(durations),
            }
        return result
