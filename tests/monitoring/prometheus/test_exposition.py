"""/metrics (also at /api/v1/prometheus/metrics/) and /api/v1/prometheus/targets/: access,
contents, service discovery, cost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from config.env import EnvReader
from core import redis_client as shared_redis
from core.choices import TokenScope
from core.durations import RECONCILE, TASK
from core.jobs import JobKind
from deployments.choices import ReplicaState, RolloutState
from deployments.models import Deployment, Replica, Rollout
from deployments.runtimes import get_adapter
from fleet.choices import NodeState
from fleet.models import Node
from monitoring import snapshot
from tests.deployments.builders import GiB, bare_deployment, gguf_variant, gpu, node, qwen

METRICS = "/metrics"
TARGETS = "/api/v1/prometheus/targets/"
SCRAPE_TOKEN = "scrape-token-for-tests-0123456789"


def populate(admin: Any) -> dict[str, Any]:
    """A small fleet: three nodes (one with a full disk and a nearly full GPU, one
    unreachable, one pending), a llama.cpp deployment with two serving replicas, an Ollama
    deployment with one, a failed rollout, and jobs."""
    big = node(
        "gpu-box",
        gpus=[gpu(0, 24 * GiB, 1 * GiB), gpu(1, 24 * GiB, 20 * GiB)],
    )
    big.inventory = {
        **big.inventory,
        "host": {"hostname": "gpu-box.example.net", "address": "127.0.0.1"},
        "disk": {"path": "/var/lib/fleet", "total_bytes": 100 * GiB, "free_bytes": 5 * GiB},
    }
    big.save(update_fields=["inventory"])
    lost = node("lost-box", state=NodeState.UNREACHABLE)
    lost.inventory = {**lost.inventory, "disk": {"total_bytes": 100, "free_bytes": 1}}
    lost.last_heartbeat_at = timezone.now() - timedelta(minutes=3)
    lost.save(update_fields=["inventory", "last_heartbeat_at"])
    node("new-box", state=NodeState.PENDING)
    variant = gguf_variant(qwen("acme/metrics-model"))
    llama = bare_deployment(admin, "chat", variant, replicas=2)
    ollama = bare_deployment(admin, "olla", variant, runtime="ollama")
    replicas = [
        Replica.objects.create(
            deployment=llama,
            revision=llama.current_revision,
            slot=slot,
            node=big,
            state=state,
            host_port=20000 + slot,
            restarts=slot,
        )
        for slot, state in ((0, ReplicaState.AVAILABLE), (1, ReplicaState.STARTING))
    ]
    Replica.objects.create(
        deployment=llama,
        revision=llama.current_revision,
        slot=2,
        node=big,
        state=ReplicaState.GONE,
        host_port=20009,
    )
    Replica.objects.create(
        deployment=ollama,
        revision=ollama.current_revision,
        slot=0,
        node=big,
        state=ReplicaState.AVAILABLE,
        host_port=20100,
    )
    Rollout.objects.create(
        deployment=llama,
        to_revision=llama.current_revision,
        state=RolloutState.FAILED,
        failure_reason="slot 0 not healthy",
        finished_at=timezone.now(),
    )
    from core import job_services
    from core.history import ChangeContext

    job_services.create_job(
        ChangeContext.for_user(admin),
        kind=JobKind.DOWNLOAD,
        target_type="models_catalog.variant",
        target_id=variant.pk,
        target_name=str(variant),
        node=big,
    )
    return {"big": big, "lost": lost, "llama": llama, "ollama": ollama, "replicas": replicas}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, metric: str, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


# --- Access ------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("path", [METRICS, TARGETS])
def test_anonymous_scrapes_are_refused_with_401(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "fleet_nodes" not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", [METRICS, TARGETS])
def test_the_scrape_token_opens_both_endpoints(client, settings, path: str) -> None:
    settings.FLEET_PROMETHEUS_TOKEN = SCRAPE_TOKEN
    ok = client.get(path, HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}")
    assert ok.status_code == 200, ok.content
    wrong = client.get(path, HTTP_AUTHORIZATION=f"Bearer {SCRAPE_TOKEN}x")
    assert wrong.status_code == 401
    settings.FLEET_PROMETHEUS_TOKEN = ""
    unset = client.get(path, HTTP_AUTHORIZATION="Bearer ")
    assert unset.status_code == 401


@pytest.mark.django_db
def test_a_read_scope_api_token_may_scrape(client, viewer_user, token_for) -> None:
    key = token_for(viewer_user, scope=TokenScope.READ)
    response = client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.django_db
def test_configured_networks_scrape_without_a_credential(client, settings) -> None:
    settings.FLEET_PROMETHEUS_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.0/8"]
    assert client.get(METRICS, REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get(TARGETS, REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get(METRICS, REMOTE_ADDR="192.168.1.9").status_code == 401
    settings.FLEET_PROMETHEUS_ALLOWED_NETWORKS = ["::1/128"]
    assert client.get(METRICS, REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get(METRICS, REMOTE_ADDR="::1").status_code == 200


def test_the_networks_setting_refuses_what_is_not_a_network() -> None:
    reader = EnvReader({"NETS": "10.0.0.0/8, 127.0.0.1 ,fd00::/8"})
    assert reader.networks("NETS") == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    assert EnvReader({}).networks("NETS") == []
    with pytest.raises(ImproperlyConfigured, match=r"NETS: '10\.0\.0\.0/33' is not an IP network"):
        EnvReader({"NETS": "10.0.0.0/33"}).networks("NETS")
    with pytest.raises(ImproperlyConfigured, match="CIDR"):
        EnvReader({"NETS": "intranet"}).networks("NETS")


# --- Contents ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_describe_the_fleet(api_client_for, personas) -> None:
    populate(personas["admin"])
    response = api_client_for("viewer").get(METRICS)
    assert response.status_code == 200
    text = response.content.decode()
    found = samples(text)
    assert value(found, "fleet_nodes", state="ready") == 1
    assert value(found, "fleet_nodes", state="unreachable") == 1
    assert value(found, "fleet_nodes", state="pending") == 1
    assert value(found, "fleet_node_state", node="lost-box", state="unreachable") == 1
    assert value(found, "fleet_node_state", node="lost-box", state="ready") == 0
    assert 170 <= value(found, "fleet_node_heartbeat_age_seconds", node="lost-box") <= 400
    assert value(found, "fleet_node_disk_free_bytes", node="gpu-box") == 5 * GiB
    assert value(found, "fleet_node_disk_total_bytes", node="gpu-box") == 100 * GiB
    # an unreachable node's last inventory is stale: not exported
    assert ("fleet_node_disk_free_bytes", (("node", "lost-box"),)) not in found
    gpu0 = {"node": "gpu-box", "gpu": "0", "model": "NVIDIA L4"}
    assert value(found, "fleet_node_gpu_memory_total_bytes", **gpu0) == 24 * GiB
    assert value(found, "fleet_node_gpu_memory_free_bytes", **gpu0) == 1 * GiB
    assert value(found, "fleet_replicas", deployment="chat", state="available") == 1
    assert value(found, "fleet_replicas", deployment="chat", state="starting") == 1
    assert value(found, "fleet_replicas", deployment="chat", state="failed") == 0
    assert ("fleet_replicas", (("deployment", "chat"), ("state", "gone"))) not in found
    assert value(found, "fleet_deployment_replicas_desired", deployment="chat") == 2
    assert value(found, "fleet_deployment_replicas_available", deployment="chat") == 1
    chat_rollout = Rollout.objects.get(deployment__name="chat", state=RolloutState.FAILED)
    assert (
        value(
            found,
            "fleet_deployment_rollout_state",
            deployment="chat",
            rollout=str(chat_rollout.pk),
            state="failed",
        )
        == 1
    )
    assert value(found, "fleet_rollouts", state="failed") >= 1
    assert value(found, "fleet_jobs", kind="download", state="queued") == 1
    assert value(found, "fleet_alert_threshold", name="queue_depth") == 100
    assert value(found, "fleet_broker_up") == 1
    assert value(found, "fleet_queue_depth", queue="control") >= 0
    assert value(found, "fleet_info", version="0.1.0") == 1
    # slot 1 of chat restarted once (its container's restart count)
    replica = Replica.objects.get(deployment__name="chat", slot=1, state=ReplicaState.STARTING)
    assert (
        value(
            found,
            "fleet_replica_restarts_total",
            deployment="chat",
            replica=str(replica.pk),
            slot="1",
            node="gpu-box",
        )
        == 1
    )
    # the process' own metrics (prometheus_client's default registry) come along
    assert "process_cpu_seconds_total" in text or "python_info" in text


@pytest.mark.django_db
def test_queue_depth_is_read_from_the_broker(api_client_for, personas, settings) -> None:
    fleet = populate(personas["admin"])
    queue = f"node.{fleet['big'].pk}"
    client = shared_redis.redis_client()
    client.delete(queue, f"{queue}\x06\x163")
    try:
        client.rpush(queue, *[b"{}"] * 7)
        client.rpush(f"{queue}\x06\x163", b"{}", b"{}")  # kombu's priority list
        found = samples(api_client_for("viewer").get(METRICS).content.decode())
        assert value(found, "fleet_queue_depth", queue=queue) == 9
        assert value(found, "fleet_queue_depth", queue=f"node.{fleet['lost'].pk}") == 0
    finally:
        client.delete(queue, f"{queue}\x06\x163")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    shared_redis._clients.clear()
    try:
        found = samples(api_client_for("viewer").get(METRICS).content.decode())
    finally:
        shared_redis._clients.clear()
    assert value(found, "fleet_broker_up") == 0
    assert not [k for k in found if k[0] == "fleet_queue_depth"]


def _histogram(found: dict, name: str, **labels: str) -> float:
    return found.get((f"{name}_count", tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_reconcile_and_task_durations_reach_the_scrape(api_client_for, personas) -> None:
    """The tasks run as Celery runs them (signals included); their durations land in Redis
    and the web process exports them."""
    from core.tasks import reconcile_jobs
    from deployments.tasks import reconcile_all

    def scrape() -> dict:
        return samples(api_client_for("viewer").get(METRICS).content.decode())

    before = scrape()
    reconcile_all.apply()
    reconcile_jobs.apply()
    after = scrape()
    for loop in ("all", "jobs"):
        name = RECONCILE.name
        assert _histogram(after, name, loop=loop) == _histogram(before, name, loop=loop) + 1
    task = {"task": "deployments.tasks.reconcile_all", "outcome": "success"}
    assert _histogram(after, TASK.name, **task) == _histogram(before, TASK.name, **task) + 1
    buckets = {
        k[1]: v
        for k, v in after.items()
        if k[0] == f"{RECONCILE.name}_bucket" and ("loop", "all") in k[1]
    }
    inf = next(v for labels, v in buckets.items() if ("le", "+Inf") in labels)
    assert inf == _histogram(after, RECONCILE.name, loop="all")
    assert sorted(buckets.values()) == list(sorted(buckets.values()))  # cumulative


@pytest.mark.django_db
def test_a_scrape_costs_the_same_queries_however_big_the_fleet(
    personas, django_assert_max_num_queries
) -> None:
    populate(personas["admin"])
    with django_assert_max_num_queries(12) as small:
        snapshot.take()
    for index in range(30):
        node(f"extra-{index}", gpus=[gpu(0, 8 * GiB, 4 * GiB)])
    with django_assert_max_num_queries(len(small.captured_queries)):
        fleet = snapshot.take()
    assert len(fleet.nodes) == 33


# --- Service discovery -------------------------------------------------------------------------
@pytest.mark.django_db
def test_service_discovery_lists_each_serving_replica_with_its_labels(
    api_client_for, personas
) -> None:
    fleet = populate(personas["admin"])
    Node.objects.filter(pk=fleet["big"].pk).update(
        inventory={**fleet["big"].inventory, "host": {"address": "10.9.8.7"}}
    )
    response = api_client_for("viewer").get(TARGETS)
    assert response.status_code == 200
    groups = response.json()
    llama: Deployment = fleet["llama"]
    revision = str(llama.current_revision.number)
    by_replica = {g["labels"]["replica"]: g for g in groups}
    # the Ollama replica is left out: the runtime has no metrics endpoint
    assert set(by_replica) == {str(r.pk) for r in fleet["replicas"]}
    first = by_replica[str(fleet["replicas"][0].pk)]
    assert first == {
        "targets": ["10.9.8.7:20000"],
        "labels": {
            "__metrics_path__": "/metrics",
            "deployment": "chat",
            "revision": revision,
            "node": "gpu-box",
            "runtime": "llamacpp",
            "model": "acme/metrics-model",
            "variant": llama.current_revision.variant.name,
            "replica": str(fleet["replicas"][0].pk),
            "slot": "0",
        },
    }


def test_the_metrics_path_comes_from_the_runtime_adapter() -> None:
    assert get_adapter("llamacpp").metrics_path_for({}) == "/metrics"
    assert get_adapter("vllm").metrics_path_for({}) == "/metrics"
    assert get_adapter("ollama").metrics_path_for({}) is None
    custom = get_adapter("custom")
    assert custom.metrics_path_for({}) is None
    args = custom.validate_args(
        {"image": "example.org/onnx:1", "command": ["serve"], "metrics_path": "/stats"}
    )
    assert custom.metrics_path_for(args) == "/stats"


@pytest.mark.django_db
def test_without_a_redis_broker_queues_are_not_reported_and_not_an_alert(
    api_client_for, personas, settings
) -> None:
    """The embedded mode's file-system broker has no depths to read; that is not a fault."""
    from monitoring import alerts

    populate(personas["admin"])
    settings.REDIS_URL = ""
    found = samples(api_client_for("viewer").get(METRICS).content.decode())
    assert not [k for k in found if k[0] in ("fleet_queue_depth", "fleet_broker_up")]
    assert "FleetBrokerUnreadable" not in {a.rule for a in alerts.active_alerts()}
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # configured, but nothing listens there
    shared_redis._clients.clear()
    try:
        assert "FleetBrokerUnreadable" in {a.rule for a in alerts.active_alerts()}
    finally:
        shared_redis._clients.clear()
