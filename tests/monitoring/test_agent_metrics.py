"""The agent's metric pieces without a control plane: parsing, normalising, buffering, GPUs.

The exposition text below is what the local llama-server image (tests/runtimes/fixtures.py)
answered on /metrics after one completion of 8 tokens; the GPU readout is the recorded
H200 (../shared/fixtures/nvml-h200.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.runtimes.llamacpp import METRICS_TABLE as LLAMACPP
from deployments.runtimes.vllm import METRICS_TABLE as VLLM
from fleet.agent.gpus import gpus_from_nvml_snapshot
from fleet.agent.metrics.collector import RoundBuffer
from fleet.agent.metrics.normalise import Scrape, TableError, check_table, normalise
from fleet.agent.metrics.prometheus import ExpositionError, parse
from fleet.agent.metrics.sources import cpu_percent, cpu_reading, gpu_values, memory_bytes
from monitoring.choices import GPU_METRICS, REPLICA_METRICS

LLAMA_SERVER = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 3
llamacpp:prompt_seconds_total 0.000563
llamacpp:tokens_predicted_total 8
llamacpp:tokens_predicted_seconds_total 0.000669
llamacpp:n_decode_total 8
llamacpp:prompt_tokens_seconds 5328.6
llamacpp:requests_processing 0
llamacpp:requests_deferred 0
"""
FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nvml-h200.json"


def test_prometheus_text_is_parsed_and_label_sets_summed():
    values = parse(LLAMA_SERVER)
    assert values["llamacpp:tokens_predicted_total"] == 8.0
    assert values["llamacpp:requests_deferred"] == 0.0
    vllm = parse(
        'vllm:num_requests_running{model_name="a",engine="0"} 2\n'
        'vllm:num_requests_running{model_name="a",engine="1"} 1\n'
        'vllm:x{path="}"} 1 1764140000000\n'
        "vllm:nan NaN\n"
    )
    assert vllm == {"vllm:num_requests_running": 3.0, "vllm:x": 1.0}
    with pytest.raises(ExpositionError):
        parse("<html>not metrics</html>")


def test_llamacpp_counters_become_rates_and_latency():
    first = Scrape(100.0, parse(LLAMA_SERVER))
    later_text = LLAMA_SERVER.replace("tokens_predicted_total 8", "tokens_predicted_total 58")
    later_text = later_text.replace("seconds_total 0.000669", "seconds_total 0.500669")
    later_text = later_text.replace("requests_processing 0", "requests_processing 2")
    later = Scrape(105.0, parse(later_text))
    assert normalise(LLAMACPP, first, None) == {"requests_running": 0.0, "requests_waiting": 0.0}
    values = normalise(LLAMACPP, later, first)
    assert values["generated_tokens_per_s"] == pytest.approx(10.0)
    assert values["prompt_tokens_per_s"] == 0.0
    assert values["time_per_token_s"] == pytest.approx(0.01)
    assert values["requests_running"] == 2.0
    assert "kv_cache_usage" not in values  # this build has no such gauge: no made-up zero
    # a restarted container's counters start again: no negative rate
    restarted = Scrape(110.0, parse(LLAMA_SERVER))
    assert "generated_tokens_per_s" not in normalise(LLAMACPP, restarted, later)


def test_adapter_tables_name_only_fleet_series_and_valid_rules():
    for table in (LLAMACPP, VLLM):
        assert set(table) <= REPLICA_METRICS
        check_table(table)
    with pytest.raises(TableError):
        check_table({"requests_running": ["average", "x"]})


def test_the_buffer_keeps_the_newest_rounds_and_counts_what_it_dropped():
    buffer = RoundBuffer(3)
    for t in range(5):
        buffer.append({"t": t})
    assert [r["t"] for r in buffer.head(10)] == [2, 3, 4]
    assert buffer.dropped == 2
    buffer.drop_head(2)
    assert [r["t"] for r in buffer.head(10)] == [4]


def test_gpu_series_from_a_real_h200_readout():
    readout = gpus_from_nvml_snapshot(json.loads(FIXTURE.read_text()))
    (gpu,) = gpu_values(readout)
    assert set(gpu) - {"index"} <= GPU_METRICS
    assert gpu["index"] == 0
    assert gpu["gpu_memory_total_bytes"] > 140 * 10**9
    assert 0 <= gpu["gpu_utilization_percent"] <= 100
    assert gpu["gpu_temperature_c"] > 0


def test_container_cpu_and_memory_from_engine_stats():
    def stats(total: int, system: int) -> dict:
        return {
            "cpu_stats": {
                "cpu_usage": {"total_usage": total},
                "system_cpu_usage": system,
                "online_cpus": 2,
            },
            "memory_stats": {"usage": 300, "stats": {"inactive_file": 100}},
        }

    first, second = cpu_reading(stats(1_000, 10_000)), cpu_reading(stats(2_000, 12_000))
    assert cpu_percent(first, None) is None
    assert cpu_percent(second, first) == 100.0  # one of two cores busy
    assert memory_bytes(stats(0, 0)) == 200
