"""Profiles and suites: bad input is a 400 naming the field; good input is normalized."""

from __future__ import annotations

import pytest

from benchmarks import profiles, suites
from core.errors import ServiceError


def field_of(call, *args):
    with pytest.raises(ServiceError) as caught:
        call(*args)
    return caught.value.field, caught.value.message


def test_profile_defaults_fill_in():
    spec = profiles.normalize({"levels": [1, 2, 4, 8]})
    assert spec["mode"] == "concurrency"
    assert spec["requests_per_level"] == 16 and spec["duration_s"] is None
    levels = profiles.levels_of(spec)
    assert [lv.concurrency for lv in levels] == [1, 2, 4, 8]
    assert "concurrency 1, 2, 4, 8" in profiles.describe(spec)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"levels": []}, "levels"),
        ({"levels": [1, 0]}, "levels[1]"),
        ({"levels": [1, 2.5]}, "levels[1]"),
        ({"mode": "rate", "levels": [0.0]}, "levels[0]"),
        ({"mode": "sweep"}, "mode"),
        ({"requests_per_level": None}, "requests_per_level"),
        ({"duration_s": 10}, "requests_per_level"),
        ({"output_tokens": 0}, "output_tokens"),
        ({"prompt_set": "nope"}, "prompt_set"),
        ({"stream": "yes"}, "stream"),
        ({"levelz": [1]}, "levelz"),
        ([1, 2], "spec"),
    ],
)
def test_profile_bad_input_names_the_field(spec, field):
    assert field_of(profiles.normalize, spec)[0] == field


def test_rate_profile_and_prompt_set():
    spec = profiles.normalize(
        {
            "mode": "rate",
            "levels": [0.5, 2],
            "arrivals": "poisson",
            "prompt_set": "short-chat",
            "requests_per_level": None,
            "duration_s": 30,
        }
    )
    levels = profiles.levels_of(spec)
    assert [lv.rate for lv in levels] == [0.5, 2.0] and levels[0].duration_s == 30
    assert profiles.load_of(spec).prompts == profiles.prompt_sets()["short-chat"]


CASE = {"name": "c", "prompt": "Say hi", "check": {"type": "contains", "value": "hi"}}


@pytest.mark.parametrize(
    ("cases", "field"),
    [
        ([], "cases"),
        ([{"name": "a", "prompt": "x"}], "cases[0].check"),
        (
            [CASE, {**CASE, "name": "d", "check": {"type": "regex", "pattern": "(unclosed"}}],
            "cases[1].check.pattern",
        ),
        (
            [{**CASE, "check": {"type": "json_schema", "schema": {"type": "nope"}}}],
            "cases[0].check.schema",
        ),
        ([{**CASE, "check": {"type": "one_of", "choices": []}}], "cases[0].check.choices"),
        ([{**CASE, "check": {"type": "spell"}}], "cases[0].check.type"),
        ([{**CASE, "check": {"type": "max_latency", "value_ms": -1}}], "cases[0].check.value_ms"),
        ([{"name": "a", "check": CASE["check"]}], "cases[0].prompt"),
        ([{**CASE, "messages": [{"role": "user", "content": "x"}]}], "cases[0].prompt"),
        (
            [{**CASE, "messages": [{"role": "robot", "content": "x"}]} | {"prompt": None}],
            "cases[0].prompt",
        ),
        ([CASE, CASE], "cases[1].name"),
        ([{**CASE, "max_tokens": 0}], "cases[0].max_tokens"),
        ([{**CASE, "colour": "red"}], "cases[0].colour"),
    ],
)
def test_suite_bad_input_names_case_and_field(cases, field):
    got, message = field_of(suites.normalize_cases, cases)
    assert got == field, message


def test_invalid_regex_message_says_why():
    _, message = field_of(
        suites.normalize_cases, [{**CASE, "check": {"type": "regex", "pattern": "[a-"}}]
    )
    assert "not a valid regular expression" in message


@pytest.mark.parametrize(
    ("check", "answer", "passed"),
    [
        ({"type": "exact", "value": "Paris"}, " Paris\n", True),
        ({"type": "exact", "value": "paris", "ignore_case": True}, "PARIS", True),
        ({"type": "contains", "value": "Paris"}, "It is Paris.", True),
        ({"type": "contains", "value": "Paris"}, "It is Lyon.", False),
        ({"type": "regex", "pattern": r"\b42\b"}, "The answer: 42", True),
        ({"type": "one_of", "choices": ["yes", "no"], "ignore_case": True}, "Yes.", True),
        ({"type": "one_of", "choices": ["yes", "no"]}, "maybe", False),
        (
            {"type": "json_schema", "schema": {"type": "object", "required": ["a"]}},
            'Here:\n```json\n{"a": 1}\n```',
            True,
        ),
        (
            {"type": "json_schema", "schema": {"type": "object", "required": ["a"]}},
            '{"b": 1}',
            False,
        ),
        ({"type": "json_schema", "schema": {"type": "object"}}, "not json", False),
        ({"type": "max_tokens", "value": 5}, "x", True),
        ({"type": "max_latency", "value_ms": 10}, "x", False),
    ],
)
def test_judge(check, answer, passed):
    [case] = suites.normalize_cases([{"name": "c", "prompt": "p", "check": check}])
    verdict = suites.judge(case["check"], answer, tokens=3, latency_ms=50)
    assert verdict.passed is passed, verdict.why
    assert verdict.why
