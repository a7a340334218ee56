"""Model test suites: cases, their checks, and judging one answer.

A case::

    {"name": "capital", "prompt": "The capital of France is",     # or "messages": [...]
     "max_tokens": 16, "temperature": 0.0,
     "check": {"type": "contains", "value": "Paris", "ignore_case": true}}

Check types: ``exact`` (``value``; whitespace at the ends ignored), ``contains``
(``value``), ``regex`` (``pattern``, searched), ``one_of`` (``choices``: the answer, trimmed,
is one of them), ``json_schema`` (``schema``: the answer parses as JSON, a fenced code block
allowed, and validates), ``max_tokens`` (``value``: completion tokens at most) and
``max_latency`` (``value_ms``). Every text check takes ``ignore_case``.

Validation names the case and the field (``cases[2].check.pattern``), so a 400 says exactly
what to fix; nothing is stored until the whole suite is valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from core.errors import ServiceError

CHECK_TYPES = ("exact", "contains", "regex", "one_of", "json_schema", "max_tokens", "max_latency")
MAX_CASES = 500
CASE_FIELDS = {"name", "prompt", "messages", "max_tokens", "temperature", "check"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _fail(message: str, field: str) -> ServiceError:
    return ServiceError(message, field=field)


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _fail(f"{where}.messages must be a non-empty list of messages.", f"{where}.messages")
    out = []
    for i, m in enumerate(messages):
        field = f"{where}.messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise _fail(f"{field} needs a role of system, user or assistant.", field)
        if not isinstance(m.get("content"), str) or not m["content"]:
            raise _fail(f"{field} needs a non-empty content text.", f"{field}.content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _check_check(check: Any, where: str) -> dict[str, Any]:
    field = f"{where}.check"
    if not isinstance(check, dict) or "type" not in check:
        raise _fail(
            f"{field} is missing: give a check with a type ({', '.join(CHECK_TYPES)}).", field
        )
    kind = check["type"]
    if kind not in CHECK_TYPES:
        raise _fail(f"{field}.type must be one of {', '.join(CHECK_TYPES)}.", f"{field}.type")
    out: dict[str, Any] = {"type": kind, "ignore_case": bool(check.get("ignore_case", False))}
    if kind in ("exact", "contains"):
        if not isinstance(check.get("value"), str) or (kind == "contains" and not check["value"]):
            raise _fail(f"{field}.value must be a text for a {kind} check.", f"{field}.value")
        out["value"] = check["value"]
    elif kind == "regex":
        pattern = check.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise _fail(f"{field}.pattern must be a regular expression.", f"{field}.pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(
                f"{field}.pattern is not a valid regular expression: {exc}.", f"{field}.pattern"
            ) from None
        out["pattern"] = pattern
    elif kind == "one_of":
        choices = check.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and c for c in choices)
        ):
            raise _fail(f"{field}.choices must be a non-empty list of texts.", f"{field}.choices")
        out["choices"] = choices
    elif kind == "json_schema":
        schema = check.get("schema")
        if not isinstance(schema, dict):
            raise _fail(f"{field}.schema must be a JSON Schema object.", f"{field}.schema")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise _fail(
                f"{field}.schema is not a valid JSON Schema: {exc.message}.", f"{field}.schema"
            ) from None
        out["schema"] = schema
    elif kind == "max_tokens":
        value = check.get("value")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(f"{field}.value must be a whole number of tokens ≥ 1.", f"{field}.value")
        out["value"] = value
    else:  # max_latency
        value = check.get("value_ms")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _fail(
                f"{field}.value_ms must be a number of milliseconds > 0.", f"{field}.value_ms"
            )
        out["value_ms"] = float(value)
    return out


def normalize_cases(cases: Any) -> list[dict[str, Any]]:
    """The cases checked and normalized; a 400 naming the case and field otherwise."""
    if not isinstance(cases, list) or not cases:
        raise _fail("A suite needs at least one case.", "cases")
    if len(cases) > MAX_CASES:
        raise _fail(f"At most {MAX_CASES} cases per suite.", "cases")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, case in enumerate(cases):
        where = f"cases[{i}]"
        if not isinstance(case, dict):
            raise _fail(f"{where} must be an object.", where)
        unknown = sorted(set(case) - CASE_FIELDS)
        if unknown:
            raise _fail(
                f"{where} has unknown field(s): {', '.join(unknown)}.", f"{where}.{unknown[0]}"
            )
        name = case.get("name") or f"case {i + 1}"
        if not isinstance(name, str) or len(name) > 100:
            raise _fail(f"{where}.name must be a text of at most 100 characters.", f"{where}.name")
        if name in names:
            raise _fail(f"{where}.name {name!r} is used by another case.", f"{where}.name")
        names.add(name)
        has_prompt, has_messages = "prompt" in case, "messages" in case
        if has_prompt == has_messages:
            raise _fail(f"{where} needs either a prompt or messages (not both).", f"{where}.prompt")
        item: dict[str, Any] = {"name": name}
        if has_prompt:
            if not isinstance(case["prompt"], str) or not case["prompt"]:
                raise _fail(f"{where}.prompt must be a non-empty text.", f"{where}.prompt")
            item["prompt"] = case["prompt"]
        else:
            item["messages"] = _check_messages(case["messages"], where)
        max_tokens = case.get("max_tokens", 64)
        if (
            isinstance(max_tokens, bool)
            or not isinstance(max_tokens, int)
            or not 1 <= max_tokens <= 32768
        ):
            raise _fail(
                f"{where}.max_tokens must be a whole number from 1 to 32768.", f"{where}.max_tokens"
            )
        item["max_tokens"] = max_tokens
        temperature = case.get("temperature", 0.0)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            raise _fail(f"{where}.temperature must be between 0 and 2.", f"{where}.temperature")
        item["temperature"] = float(temperature)
        item["check"] = _check_check(case.get("check"), where)
        out.append(item)
    return out


@dataclass
class Verdict:
    passed: bool
    why: str


def _fold(text: str, check: dict[str, Any]) -> str:
    return text.casefold() if check.get("ignore_case") else text


def _json_in(answer: str) -> Any:
    fenced = _FENCE.search(answer)
    return json.loads(fenced.group(1) if fenced else answer.strip())


def judge(check: dict[str, Any], answer: str, *, tokens: int, latency_ms: float) -> Verdict:
    """Does ``answer`` pass ``check``? The reason says what was expected and what came."""
    kind = check["type"]
    text = _fold(answer, check)
    short = answer.strip().replace("\n", " ")[:120]
    if kind == "exact":
        ok = text.strip() == _fold(check["value"], check).strip()
        return Verdict(
            ok, "matches exactly" if ok else f"expected {check['value']!r}, got {short!r}"
        )
    if kind == "contains":
        ok = _fold(check["value"], check) in text
        return Verdict(
            ok, f"contains {check['value']!r}" if ok else f"{check['value']!r} not in {short!r}"
        )
    if kind == "regex":
        flags = re.IGNORECASE if check.get("ignore_case") else 0
        ok = re.search(check["pattern"], answer, flags) is not None
        return Verdict(
            ok,
            f"matches /{check['pattern']}/"
            if ok
            else f"/{check['pattern']}/ does not match {short!r}",
        )
    if kind == "one_of":
        choices = {_fold(c, check).strip() for c in check["choices"]}
        ok = text.strip().rstrip(".") in choices or text.strip() in choices
        return Verdict(
            ok, "one of the choices" if ok else f"{short!r} is none of {check['choices']}"
        )
    if kind == "json_schema":
        try:
            value = _json_in(answer)
        except ValueError as exc:
            return Verdict(False, f"not JSON ({exc.__class__.__name__}: {exc}): {short!r}")
        errors = sorted(
            jsonschema.validators.validator_for(check["schema"])(check["schema"]).iter_errors(
                value
            ),
            key=lambda e: list(e.path),
        )
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Verdict(False, f"JSON breaks the schema at {where}: {errors[0].message}")
        return Verdict(True, "valid JSON for the schema")
    if kind == "max_tokens":
        ok = tokens <= check["value"]
        return Verdict(ok, f"{tokens} tokens (max {check['value']})")
    ok = latency_ms <= check["value_ms"]
    return Verdict(ok, f"{latency_ms:.0f} ms (max {check['value_ms']:g} ms)")
