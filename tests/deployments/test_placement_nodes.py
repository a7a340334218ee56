"""Placement: which node a replica goes to, or why none fits, with real footprints
(Qwen2.5-0.5B-Instruct: Q4_K_M GGUF ≈ 1.13 GB with llama.cpp at 4096 tokens; bf16 with vLLM
≈ 1.77 GB) against node inventories written here."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import ReplicaState
from deployments.models import Replica
from deployments.placement import Demand, allocate_port, demand_for, place
from deployments.spec import normalize_spec
from fleet import capacity
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.fits import fits_on
from tests.deployments.builders import (
    GB,
    bare_deployment,
    gguf_variant,
    gpu,
    holds,
    node,
    safetensors_variant,
    spec,
)

pytestmark = pytest.mark.django_db


def cpu_demand(variant, **overrides) -> Demand:
    return demand_for(normalize_spec(spec(variant, **overrides)), variant, deployment_id=1)


def test_footprint_at_the_runtimes_context():
    variant = gguf_variant()
    default = cpu_demand(variant)
    assert (default.device, default.context, default.gpus) == ("cpu", 4096, 0)
    assert 1.1 * GB < default.bytes < 1.2 * GB
    longer = cpu_demand(variant, runtime_args={"context_size": 32768})
    # the KV cache grows by 2 × 24 layers × 2 KV heads × 64 × 28672 tokens × 2 bytes
    assert longer.bytes - default.bytes == 2 * 24 * 2 * 64 * (32768 - 4096) * 2
    beyond = cpu_demand(variant, runtime_args={"context_size": 131072})
    assert beyond.context == 32768, "capped at the model's maximum context"
    offloaded = cpu_demand(variant, runtime_args={"gpu_layers": 99})
    assert (offloaded.device, offloaded.gpus) == ("gpu", 1)


def test_ready_uncordoned_matching_nodes_only():
    variant = gguf_variant()
    demand = cpu_demand(variant, placement={"selector": {"zone": "eu-1"}})
    nodes = [
        node("a-cordoned", labels={"zone": "eu-1"}, cordoned=True),
        node("b-other-zone", labels={"zone": "us-1"}),
        node("c-unreachable", labels={"zone": "eu-1"}, state=NodeState.UNREACHABLE),
        node("d-good", labels={"zone": "eu-1", "gpu": "none"}),
    ]
    (decision,) = place([demand], nodes, [])
    assert decision.node is not None and decision.node.name == "d-good"
    assert decision.port == 20000
    assert (decision.device, decision.reserved_bytes) == ("cpu", demand.bytes)


def test_reasons_when_nothing_is_schedulable_or_matches():
    demand = cpu_demand(gguf_variant(), placement={"selector": {"gpu": "h100"}})
    assert place([demand], [], [])[0].reason == "no nodes have joined the fleet"
    stale = node("old", state=NodeState.READY)
    stale.last_heartbeat_at = timezone.now() - timedelta(minutes=5)
    drained = node("drained", draining=True)
    (decision,) = place([demand], [stale, drained], [])
    assert decision.node is None
    assert decision.reason == "no schedulable node: drained is draining, old is unreachable"
    (decision,) = place([demand], [node("plain", labels={"gpu": "l4"})], [])
    assert decision.reason == "no ready node has the labels gpu=h100"


def test_not_enough_ram_names_the_need_and_the_best_node():
    demand = cpu_demand(gguf_variant())
    nodes = [node("small", ram_free=int(0.8 * GB)), node("tiny", ram_free=int(0.3 * GB))]
    (decision,) = place([demand], nodes, [])
    assert decision.reason == "no node with 1.1 GB free RAM; small has 0.8 GB"


def test_not_enough_vram_reads_like_the_issue():
    variant = gguf_variant(size=5_000_000_000)  # a 7B-class Q4 file, say
    demand = cpu_demand(variant, runtime_args={"gpu_layers": 99})
    nodes = [
        node("node-1", gpus=[gpu(0, 8 * GB, int(2.2 * GB))]),
        node("node-2"),  # no GPU
        node("node-3", gpus=[gpu(0, 8 * GB, int(3.9 * GB)), gpu(1, 8 * GB, int(1.0 * GB))]),
    ]
    (decision,) = place([demand], nodes, [])
    assert decision.reason == "no node with 5.6 GB free VRAM; node-3 has 3.9 GB"


def test_gpu_placement_picks_a_gpu_and_reserves_on_it():
    variant = gguf_variant()
    demand = cpu_demand(variant, runtime_args={"gpu_layers": 99})
    host = node("gpu-host", gpus=[gpu(0, 24 * GB, 2 * GB), gpu(1, 24 * GB, 20 * GB)])
    first, second = place([demand, demand], [host], [])
    assert first.gpu_indices == (1,), "spread: the emptiest GPU"
    assert second.gpu_indices == (1,), "GPU 0 has only 2 GB; GPU 1 still has room"
    assert second.port == first.port + 1


def test_vllm_takes_its_share_of_a_gpu():
    variant = safetensors_variant()
    demand = demand_for(normalize_spec(spec(variant)), variant, deployment_id=1)
    assert demand.gpu_fraction == 0.9
    one_gpu = node("one-gpu", gpus=[gpu(0, 24 * GB, 23 * GB)])
    first, second = place([demand, demand], [one_gpu], [])
    assert first.reserved_bytes == int(0.9 * 24 * GB)
    assert second.node is None
    assert second.reason.startswith("no node with 90% of a GPU's memory free (at least 1.8 GB)")
    two_gpus = node("two-gpus", gpus=[gpu(0, 24 * GB, 23 * GB), gpu(1, 24 * GB, 23 * GB)])
    first, second = place([demand, demand], [two_gpus], [])
    assert {first.gpu_indices, second.gpu_indices} == {(0,), (1,)}


def test_tensor_parallel_needs_as_many_gpus():
    variant = safetensors_variant()
    normalized = normalize_spec(spec(variant, runtime_args={"tensor_parallel_size": 2}))
    demand = demand_for(normalized, variant)
    assert demand.gpus == 2
    (decision,) = place([demand], [node("single", gpus=[gpu(0, 80 * GB, 80 * GB)])], [])
    assert decision.reason.endswith("2 GPUs needed, single has 1")
    pair = node("pair", gpus=[gpu(0, 24 * GB, 24 * GB), gpu(1, 24 * GB, 24 * GB)])
    (decision,) = place([demand], [pair], [])
    assert decision.gpu_indices == (0, 1)
    assert decision.reserved_bytes == 2 * int(0.9 * 24 * GB)


def _placed(operator_user, name, variant, host, state, reserved, **fields):
    deployment = bare_deployment(operator_user, name, variant)
    return Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=0,
        node=host,
        state=state,
        reserved_device="cpu",
        reserved_bytes=reserved,
        host_port=fields.pop("host_port", 20000),
        **fields,
    )


def test_reservations_of_replicas_not_yet_running_come_off_free_memory(operator_user):
    variant = gguf_variant()
    host = node("host", ram_total=16 * GB, ram_free=16 * GB)
    pending = _placed(operator_user, "other", variant, host, ReplicaState.DOWNLOADING, 15 * GB)
    (decision,) = place([cpu_demand(variant)], [host], [pending])
    assert decision.reason == "no node with 1.1 GB free RAM; host has 1.0 GB"
    pending.state = ReplicaState.GONE
    (decision,) = place([cpu_demand(variant)], [host], [pending])
    assert decision.placed, "gone replicas reserve nothing"


def test_running_replicas_are_not_counted_twice(operator_user):
    """A running replica's memory already shows in the node's report: only the capacity
    check counts it again (16 GB total, 10 GB free with a 6 GB replica running → 10 GB)."""
    variant = gguf_variant()
    host = node("host", ram_total=16 * GB, ram_free=10 * GB)
    running = _placed(operator_user, "other", variant, host, ReplicaState.AVAILABLE, 6 * GB)
    big = Demand(variant_id=variant.pk, device="cpu", bytes=9 * GB, context=4096)
    (decision,) = place([big], [host], [running])
    assert decision.placed
    too_big = Demand(variant_id=variant.pk, device="cpu", bytes=int(10.5 * GB), context=4096)
    (decision,) = place([too_big], [host], [running])
    assert decision.reason == "no node with 10.5 GB free RAM; host has 10.0 GB"


def test_spread_and_binpack():
    variant = gguf_variant()
    roomy = node("roomy", ram_free=30 * GB, ram_total=32 * GB)
    snug = node("snug", ram_free=3 * GB, ram_total=4 * GB)
    spread = cpu_demand(variant)
    decisions = place([spread, spread, spread], [roomy, snug], [])
    assert [d.node.name for d in decisions] == ["roomy", "snug", "roomy"]  # type: ignore[union-attr]
    binpack = cpu_demand(variant, placement={"strategy": "binpack"})
    decisions = place([binpack, binpack, binpack], [roomy, snug], [])
    # snug (3 GB) takes two 1.13 GB replicas, then roomy
    assert [d.node.name for d in decisions] == ["snug", "snug", "roomy"]  # type: ignore[union-attr]


def test_nodes_holding_the_files_are_preferred():
    variant = gguf_variant()
    roomy = node("roomy", ram_free=30 * GB, ram_total=32 * GB)
    holder = node("holder", ram_free=8 * GB)
    holds(holder, variant)
    binpack = cpu_demand(variant, placement={"strategy": "binpack"})
    assert place([binpack], [roomy, holder], [])[0].holds_files is True
    spread = cpu_demand(variant)
    first, second = place([spread, spread], [roomy, holder], [])
    assert (first.node.name, first.holds_files) == ("holder", True)  # type: ignore[union-attr]
    assert second.node.name == "roomy", "spread still spreads"  # type: ignore[union-attr]


def test_ports(settings):
    variant = gguf_variant()
    host = node("host")
    assert allocate_port(host, {20000, 20001, 20003}) == 20002
    assert allocate_port(host, {20000, 20001}, (20000, 20001)) is None
    settings.FLEET_REPLICA_PORT_RANGE = (21000, 21001)
    decisions = place([cpu_demand(variant)] * 3, [host], [])
    assert [d.port for d in decisions[:2]] == [21000, 21001]
    assert decisions[2].reason == "no node with 1.1 GB free RAM; no free port left on host"


def test_fixed_port_is_one_replica_per_node(operator_user):
    variant = gguf_variant()
    a, b = node("a"), node("b")
    fixed = cpu_demand(variant, port=8080)
    first, second, third = place([fixed, fixed, fixed], [a, b], [])
    assert {first.node.name, second.node.name} == {"a", "b"}  # type: ignore[union-attr]
    assert first.port == second.port == 8080
    assert third.reason == "port 8080 is taken on a, b"


def test_catalog_fits_on_counts_placed_replicas(operator_user):
    variant = gguf_variant()
    host = node("host", ram_total=16 * GB, ram_free=16 * GB)
    before = fits_on(variant, [4096], nodes=[host])["nodes"][0]["cells"][0]
    assert before["free_bytes"] == 16 * GB
    _placed(operator_user, "other", variant, host, ReplicaState.STARTING, 12 * GB)
    host = Node.objects.get(pk=host.pk)  # a new request: the reservations are read per node
    after = fits_on(variant, [4096], nodes=[host])["nodes"][0]["cells"][0]
    assert after["free_bytes"] == 4 * GB
    assert capacity.reserved_bytes(host, "cpu") == 12 * GB


def test_a_bad_port_range_fails_at_start_naming_the_variable(tmp_path):
    from tests.config.test_settings_module import run_manage

    for value in ("20000", "30000-20000", "80-90", "a-b"):
        result = run_manage(
            {"FLEET_STATE_DIR": str(tmp_path), "FLEET_REPLICA_PORT_RANGE": value}, "check"
        )
        assert result.returncode != 0, value
        assert "FLEET_REPLICA_PORT_RANGE" in result.stderr, value
