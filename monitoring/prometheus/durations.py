"""Reconcile and task durations, exported by the web process (the exposition half).

The histograms are recorded where the work happens (:mod:`core.durations`: Celery workers
add each observation to a hash in Redis); :class:`SharedHistogramCollector` turns those
hashes into Prometheus histograms at scrape time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from core.durations import BUCKETS, HISTOGRAMS, SharedHistogram
from core.redis_client import redis_client

log = logging.getLogger(__name__)


def family(histogram: SharedHistogram, raw: dict[bytes, bytes]) -> HistogramMetricFamily:
    """One shared histogram's Redis hash as a Prometheus histogram (cumulative buckets)."""
    family = HistogramMetricFamily(
        histogram.name, histogram.documentation, labels=histogram.labelnames
    )
    series: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        labelkey, _, part = field.decode().rpartition("\t")
        series.setdefault(labelkey, {})[part] = float(value)
    for labelkey, parts in sorted(series.items()):
        try:
            values = [str(v) for v in json.loads(labelkey)]
        except ValueError:
            continue  # not ours
        if len(values) != len(histogram.labelnames):
            continue
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound in BUCKETS:
            cumulative += parts.get(str(bound), 0.0)
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", parts.get("count", cumulative + parts.get("+Inf", 0.0))))
        family.add_metric(values, buckets, parts.get("sum", 0.0))
    return family


class SharedHistogramCollector(Collector):
    """Reads the shared histograms from Redis at scrape time (one round trip)."""

    def collect(self) -> Iterator[HistogramMetricFamily]:
        raw: list[dict[bytes, bytes]] = [{} for _ in HISTOGRAMS]
        if getattr(settings, "REDIS_URL", ""):
            try:
                with redis_client().pipeline(transaction=False) as pipe:
                    for histogram in HISTOGRAMS:
                        pipe.hgetall(histogram.key)
                    raw = pipe.execute()
            except Exception as exc:
                log.warning("reading shared histograms from Redis failed: %s", exc)
        for histogram, values in zip(HISTOGRAMS, raw, strict=True):
            yield family(histogram, values)
