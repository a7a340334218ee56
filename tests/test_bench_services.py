"""bench/_services.py: what a benchmark checks or starts before it measures (the real services
of the test run: PostgreSQL, Redis and the Docker engine are running here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_services():
    spec = importlib.util.spec_from_file_location("bench_services", BENCH / "_services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_running_services_pass_and_a_running_engine_is_left_alone(bench_services):
    said: list[str] = []
    with bench_services.services("postgres", "redis", "docker", log=said.append):
        pass
    assert said == []  # nothing started, so nothing to stop


def test_a_missing_tool_says_in_one_line_what_to_run_first(bench_services, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no wrk, no dockerd there
    with (
        pytest.raises(bench_services.Missing, match="run scripts/test once") as missing,
        bench_services.services("wrk"),
    ):
        pass
    assert "\n" not in str(missing.value)


def test_a_closed_port_names_the_service(bench_services, monkeypatch):
    monkeypatch.setitem(bench_services.PORTS, "postgres", ("PostgreSQL", 9))  # discard: closed
    with (
        pytest.raises(bench_services.Missing, match=r"PostgreSQL is not reachable on 127.0.0.1:9"),
        bench_services.services("postgres"),
    ):
        pass
