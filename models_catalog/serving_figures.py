"""Serving figures of variants, measured by benchmark runs, for the variant comparison.

The catalog sits below the benchmarks app, so the benchmarks app registers its reader here
in its ``AppConfig.ready()``; without one, the comparison simply has no serving figures.
A reader answers ``{variant id: [{"node_kind", "run", "level", "output_tokens_per_s",
"ttft_p50_ms", "latency_p99_ms", "runtime", "measured_at"}]}``: the latest run per variant
and node kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
Reader = Callable[[list[int]], dict[int, list[dict[str, Any]]]]
_readers: list[Reader] = []


def register(reader: Reader) -> None:
    _readers[:] = [reader]


def for_variants(variant_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not _readers or not variant_ids:
        return {}
    try:
        return _readers[0](variant_ids)
    except Exception:
        log.exception("reading the serving figures of variants failed")
        return {}
