"""Reading a runtime's Prometheus text exposition (version 0.0.4) into one number per name.

The parsing is prometheus_client's (``text_string_to_metric_families``: names, quoted and
escaped label values, ``NaN``/``+Inf``, timestamps, HELP/TYPE lines). Samples of one name
with different labels are summed (vLLM labels every series with ``model_name``; one replica
serves one model), so the result maps each sample name (``x_total``, ``x_sum``, ``x_bucket``
...) to one number. The library names the samples of a counter whose ``# TYPE`` name lacks
``_total`` ``<name>_total`` (OpenMetrics style); the runtimes' tables already name every
counter with ``_total``.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

MAX_BYTES = 4 * 1024 * 1024


class ExpositionError(ValueError):
    """The text is not Prometheus exposition format."""


def parse(text: str) -> dict[str, float]:
    """Metric name -> value (summed over label sets); NaN samples are skipped."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                value = float(sample.value)
                if math.isnan(value):
                    continue
                values[sample.name] = values.get(sample.name, 0.0) + value
    except ValueError as exc:  # the library's one error for text it cannot read
        detail = str(exc)[:120] or "a line it cannot read"
        raise ExpositionError(f"not Prometheus text: {detail}") from None
    return values
