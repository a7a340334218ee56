"""Apply a runtime's normalisation table to two successive scrapes.

The table comes from the container's ``fleet.metrics`` label (written by the runtime's
adapter, ``deployments/runtimes/base.py: with_metrics``)::

    {"generated_tokens_per_s": ["rate", "llamacpp:tokens_predicted_total"],
     "requests_running": ["gauge", "llamacpp:requests_processing"],
     "time_per_token_s": ["ratio", "llamacpp:tokens_predicted_seconds_total",
                          "llamacpp:tokens_predicted_total"]}

- ``gauge``: the current value;
- ``rate``: the counter's increase per second since the previous scrape (none on the first
  scrape or after a counter reset, e.g. a restarted container);
- ``ratio``: the increase of the first counter over the increase of the second (none when
  the second did not move: no request finished, so no latency to report).

A metric absent from the scrape gives no value (never a made-up zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("gauge", "rate", "ratio")


class TableError(ValueError):
    """The label's table is malformed (an adapter bug; reported, never crashes the loop)."""


def check_table(table: Any) -> dict[str, list[str]]:
    if not isinstance(table, dict):
        raise TableError("the metrics table must be an object")
    for name, rule in table.items():
        if not (
            isinstance(rule, list)
            and rule
            and rule[0] in KINDS
            and len(rule) == (3 if rule[0] == "ratio" else 2)
            and all(isinstance(part, str) for part in rule)
        ):
            raise TableError(f"bad rule for {name!r}: {rule!r}")
    return table


@dataclass(frozen=True)
class Scrape:
    at: float  # monotonic seconds
    values: dict[str, float]


def normalise(
    table: dict[str, list[str]], current: Scrape, previous: Scrape | None
) -> dict[str, float]:
    out: dict[str, float] = {}
    elapsed = current.at - previous.at if previous is not None else 0.0
    for name, rule in table.items():
        kind, metric = rule[0], rule[1]
        now = current.values.get(metric)
        if now is None:
            continue
        if kind == "gauge":
            out[name] = now
            continue
        if previous is None or elapsed <= 0:
            continue
        before = previous.values.get(metric)
        if before is None or now < before:  # first sight, or a counter reset
            continue
        if kind == "rate":
            out[name] = (now - before) / elapsed
            continue
        denominator, denominator_before = current.values.get(rule[2]), previous.values.get(rule[2])
        if denominator is None or denominator_before is None:
            continue
        moved = denominator - denominator_before
        if moved > 0:
            out[name] = (now - before) / moved
    return out
