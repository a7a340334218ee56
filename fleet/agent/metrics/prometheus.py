"""A small parser of the Prometheus text exposition format (version 0.0.4).

Enough for runtime endpoints: ``name{labels} value [timestamp]`` lines, comments and blank
lines skipped. Samples of one name with different labels are summed (vLLM labels every
series with ``model_name``; one replica serves one model), so the result maps each metric
name to one number.
"""

from __future__ import annotations

import math

MAX_BYTES = 4 * 1024 * 1024


class ExpositionError(ValueError):
    """The text is not Prometheus exposition format."""


def _split_sample(line: str) -> tuple[str, str]:
    """(name, rest after the labels) of one sample line."""
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        # label values may hold "}" inside quotes: walk to the closing brace
        index, quoted, escaped = brace + 1, False, False
        while index < len(line):
            char = line[index]
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "}" and not quoted:
                break
            index += 1
        else:
            raise ExpositionError(f"unterminated labels in {line[:80]!r}")
        return name, line[index + 1 :]
    if space == -1:
        raise ExpositionError(f"no value in {line[:80]!r}")
    return line[:space], line[space:]


def parse(text: str) -> dict[str, float]:
    """Metric name -> value (summed over label sets); NaN samples are skipped."""
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, rest = _split_sample(line)
        parts = rest.split()
        if not name or not parts:
            raise ExpositionError(f"cannot read {line[:80]!r}")
        try:
            value = float(parts[0])
        except ValueError:
            raise ExpositionError(f"not a number in {line[:80]!r}") from None
        if math.isnan(value):
            continue
        values[name] = values.get(name, 0.0) + value
    return values
