"""Benchmark profiles: what load a run puts on its targets, checked field by field.

A profile's ``spec`` (stored normalized, every default filled in)::

    {"mode": "concurrency", "levels": [1, 2, 4, 8],      # or "rate" with requests/s
     "arrivals": "constant",                              # rate mode: or "poisson"
     "requests_per_level": 32, "duration_s": null,        # one of the two
     "warmup_requests": 2,
     "prompt_tokens": 128, "output_tokens": 64,           # or "prompt_set": "short-chat"
     "stream": true, "api": "chat", "temperature": 0.0, "timeout_s": 120}

Errors are :class:`ServiceError` with the field's path (``levels[2]``), so the API answers
a 400 that names it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from core.errors import ServiceError

MODES = ("concurrency", "rate")
ARRIVALS = ("constant", "poisson")
APIS = ("chat", "completions")
MAX_LEVELS = 16
MAX_CONCURRENCY = 512
MAX_RATE = 1000.0
MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600.0
MAX_TOKENS = 32_768
PROMPT_SETS_DIR = Path(__file__).resolve().parent / "prompt_sets"

DEFAULTS: dict[str, Any] = {
    "mode": "concurrency",
    "levels": [1, 2, 4],
    "arrivals": "constant",
    "requests_per_level": 16,
    "duration_s": None,
    "warmup_requests": 1,
    "prompt_tokens": 64,
    "output_tokens": 32,
    "prompt_set": "",
    "stream": True,
    "api": "chat",
    "temperature": 0.0,
    "timeout_s": 120,
}


@cache
def prompt_sets() -> dict[str, tuple[str, ...]]:
    """The shipped prompt sets (``prompt_sets/<name>.json``: a list of prompts)."""
    found: dict[str, tuple[str, ...]] = {}
    for path in sorted(PROMPT_SETS_DIR.glob("*.json")):
        found[path.stem] = tuple(str(p) for p in json.loads(path.read_text()))
    return found


def _number(
    value: Any, field: str, *, low: float, high: float, integer: bool = True
) -> int | float:
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ServiceError(f"{field} must be {kind} between {low:g} and {high:g}.", field=field)
    if integer and float(value) != int(value):
        raise ServiceError(f"{field} must be a whole number.", field=field)
    if not low <= value <= high:
        raise ServiceError(f"{field} must be between {low:g} and {high:g}.", field=field)
    return int(value) if integer else float(value)


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ServiceError(f"{field} must be one of {', '.join(choices)}.", field=field)
    return str(value)


def normalize(spec: Any) -> dict[str, Any]:
    """The profile spec checked, with every default filled in."""
    if not isinstance(spec, dict):
        raise ServiceError("A profile's spec is an object.", field="spec")
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ServiceError(
            f"Unknown profile field(s): {', '.join(unknown)}. Known: {', '.join(DEFAULTS)}.",
            field=unknown[0],
        )
    out = {**DEFAULTS, **spec}
    out["mode"] = _choice(out["mode"], "mode", MODES)
    out["arrivals"] = _choice(out["arrivals"], "arrivals", ARRIVALS)
    out["api"] = _choice(out["api"], "api", APIS)
    levels = out["levels"]
    if not isinstance(levels, list) or not levels:
        raise ServiceError("levels must be a non-empty list, e.g. [1, 2, 4, 8].", field="levels")
    if len(levels) > MAX_LEVELS:
        raise ServiceError(f"At most {MAX_LEVELS} levels per profile.", field="levels")
    if out["mode"] == "concurrency":
        out["levels"] = [
            _number(v, f"levels[{i}]", low=1, high=MAX_CONCURRENCY) for i, v in enumerate(levels)
        ]
    else:
        out["levels"] = [
            _number(v, f"levels[{i}]", low=0.01, high=MAX_RATE, integer=False)
            for i, v in enumerate(levels)
        ]
    if (out["requests_per_level"] is None) == (out["duration_s"] is None):
        raise ServiceError(
            "Give either requests_per_level or duration_s (set the other to null).",
            field="requests_per_level",
        )
    if out["requests_per_level"] is not None:
        out["requests_per_level"] = _number(
            out["requests_per_level"], "requests_per_level", low=1, high=MAX_REQUESTS
        )
    if out["duration_s"] is not None:
        out["duration_s"] = _number(
            out["duration_s"], "duration_s", low=1, high=MAX_DURATION_S, integer=False
        )
    out["warmup_requests"] = _number(out["warmup_requests"], "warmup_requests", low=0, high=1000)
    out["prompt_tokens"] = _number(out["prompt_tokens"], "prompt_tokens", low=1, high=MAX_TOKENS)
    out["output_tokens"] = _number(out["output_tokens"], "output_tokens", low=1, high=MAX_TOKENS)
    out["temperature"] = _number(out["temperature"], "temperature", low=0, high=2, integer=False)
    out["timeout_s"] = _number(out["timeout_s"], "timeout_s", low=1, high=3600)
    if not isinstance(out["stream"], bool):
        raise ServiceError("stream must be true or false.", field="stream")
    if out["prompt_set"]:
        names = prompt_sets()
        if out["prompt_set"] not in names:
            raise ServiceError(
                f"No prompt set {out['prompt_set']!r}; shipped: {', '.join(names) or 'none'}.",
                field="prompt_set",
            )
    return out


def load_of(spec: dict[str, Any], *, seed: int = 0) -> loadgen.Load:
    prompts = prompt_sets()[spec["prompt_set"]] if spec["prompt_set"] else ()
    return loadgen.Load(
        prompt_tokens=spec["prompt_tokens"],
        output_tokens=spec["output_tokens"],
        stream=spec["stream"],
        api=spec["api"],
        prompts=prompts,
        temperature=spec["temperature"],
        timeout_s=float(spec["timeout_s"]),
        seed=seed,
    )


def levels_of(spec: dict[str, Any]) -> list[loadgen.Level]:
    common = {
        "requests": spec["requests_per_level"],
        "duration_s": spec["duration_s"],
        "warmup_requests": spec["warmup_requests"],
    }
    if spec["mode"] == "concurrency":
        return [loadgen.Level(concurrency=int(v), **common) for v in spec["levels"]]
    return [
        loadgen.Level(rate=float(v), arrivals=spec["arrivals"], **common) for v in spec["levels"]
    ]


def describe(spec: dict[str, Any]) -> str:
    """One line for pages: 'concurrency 1, 2, 4 · 16 requests each · 64→32 tokens, streamed'."""
    unit = "concurrency" if spec["mode"] == "concurrency" else "req/s"
    levels = ", ".join(f"{v:g}" for v in spec["levels"])
    each = (
        f"{spec['requests_per_level']} requests each"
        if spec["requests_per_level"] is not None
        else f"{spec['duration_s']:g} s each"
    )
    prompt = f"prompt set {spec['prompt_set']}" if spec["prompt_set"] else spec["prompt_tokens"]
    streamed = "streamed" if spec["stream"] else "not streamed"
    return f"{unit} {levels} · {each} · {prompt}→{spec['output_tokens']} tokens, {streamed}"
