"""Reconcile and task durations, recorded where they happen (the recording half).

Reconcilers and tasks run in Celery workers; ``/metrics`` is served by the web process. A
histogram kept in a worker's memory would never reach the scrape, so observations are added
to a shared histogram in Redis (one hash per metric: a counter per label set and bucket, plus
sum and count) and :mod:`monitoring.prometheus.durations` turns the hashes into Prometheus
histograms at scrape time. Counts only ever grow, so Prometheus' ``rate()`` and
``histogram_quantile()`` work as with a client-side histogram.

Recording never fails the work it measures: with no Redis (the embedded mode) or Redis down,
the observation is dropped (and logged at debug level).

* ``fleet_reconcile_duration_seconds{loop}``: :func:`timed` around a reconcile pass
  (``deployment``, ``all``, ``jobs``).
* ``fleet_task_duration_seconds{task,outcome}``: every Celery task of the control plane,
  through Celery's ``task_prerun``/``task_postrun`` signals (connected when this module is
  imported, which ``core.tasks`` and ``deployments.tasks`` do in every worker).

Its home is in core, below the tasks that record (core's and deployments') and the exposition
in monitoring that reads the same hashes.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from celery.signals import task_postrun, task_prerun
from django.conf import settings

from core.redis_client import redis_client

log = logging.getLogger(__name__)

KEY_PREFIX = "fleet:prometheus:histogram:"
# Seconds; reconciles take milliseconds, downloads and other tasks can take minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _escape(value: str) -> str:
    return value.replace("\t", " ")


class SharedHistogram:
    """A Prometheus histogram whose counts live in Redis, shared by every process."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.key = KEY_PREFIX + name

    def observe(self, seconds: float, **labels: str) -> None:
        if not getattr(settings, "REDIS_URL", ""):
            return
        labelkey = _escape(json.dumps([str(labels.get(n, "")) for n in self.labelnames]))
        bucket = next((b for b in BUCKETS if seconds <= b), None)
        try:
            with redis_client().pipeline(transaction=False) as pipe:
                pipe.hincrby(self.key, f"{labelkey}\t{bucket if bucket else '+Inf'}", 1)
                pipe.hincrby(self.key, f"{labelkey}\tcount", 1)
                pipe.hincrbyfloat(self.key, f"{labelkey}\tsum", seconds)
                pipe.execute()
        except Exception as exc:
            log.debug("recording %s failed: %s", self.name, exc)


RECONCILE = SharedHistogram(
    "fleet_reconcile_duration_seconds",
    "Time one reconcile pass took, by loop (deployment, all, jobs).",
    ("loop",),
)
TASK = SharedHistogram(
    "fleet_task_duration_seconds",
    "Time a control-plane Celery task took, by task name and outcome (success, failure).",
    ("task", "outcome"),
)
HISTOGRAMS = (RECONCILE, TASK)


F = TypeVar("F", bound=Callable[..., Any])


def timed(loop: str) -> Callable[[F], F]:
    """Decorator: record the wrapped reconcile pass in ``fleet_reconcile_duration_seconds``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with observe(RECONCILE, loop=loop):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@contextmanager
def observe(histogram: SharedHistogram, **labels: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started, **labels)


_started: dict[str, float] = {}


@task_prerun.connect(weak=False)
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect(weak=False)
def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _started.pop(task_id or "", None)
    if started is None or task is None:
        return
    outcome = "success" if state == "SUCCESS" else "failure"
    TASK.observe(time.perf_counter() - started, task=str(task.name), outcome=outcome)
