"""The console's active alerts: the same conditions as the Prometheus rules, with links.

The equivalence test starts a real Prometheus with the shipped rules file, lets it scrape the
live test server and compares its alerts (``/api/v1/alerts``) with the console's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from core.redis_client import redis_client
from deployments.choices import ReplicaState, RolloutState
from deployments.models import Deployment, Replica, Rollout
from fleet.choices import NodeState
from monitoring import alerts
from tests.deployments.builders import GiB, bare_deployment, gguf_variant, gpu, node, qwen
from tests.monitoring.prometheus.promserver import SHIPPED_RULES, PrometheusServer, scrape_job

SCRAPE_TOKEN = "alerts-scrape-token-0123456789"
IGNORED_LABELS = {"alertname", "severity", "instance", "job", "state"}


def rollout(deployment: Deployment, state: str, *, minutes_ago: float = 0) -> Rollout:
    moment = timezone.now() - timedelta(minutes=minutes_ago)
    return Rollout.objects.create(
        deployment=deployment,
        to_revision=deployment.current_revision,
        state=state,
        started_at=moment,
        finished_at=None if state == RolloutState.RUNNING else moment,
        failure_reason="not healthy within 30 s" if state == RolloutState.FAILED else "",
    )


def troubled_fleet(admin: Any) -> dict[str, Any]:
    """Every alert's condition once, and a near miss of each next to it."""
    lost = node("lost", state=NodeState.UNREACHABLE)
    node("resting", state=NodeState.UNREACHABLE, maintenance=True)  # in maintenance: no alert
    full = node("full", gpus=[gpu(0, 40 * GiB, 1 * GiB), gpu(1, 40 * GiB, 30 * GiB)])
    full.inventory = {**full.inventory, "disk": {"total_bytes": 100 * GiB, "free_bytes": 4 * GiB}}
    full.save(update_fields=["inventory"])
    roomy = node("roomy", gpus=[gpu(0, 40 * GiB, 3 * GiB)])  # 92.5 % used: under 95
    roomy.inventory = {
        **roomy.inventory,
        "disk": {"total_bytes": 100 * GiB, "free_bytes": 11 * GiB},
    }
    roomy.save(update_fields=["inventory"])
    variant = gguf_variant(qwen("acme/alerting"))
    failed = bare_deployment(admin, "broken", variant)
    rollout(failed, RolloutState.FAILED)
    paused = bare_deployment(admin, "held", variant)
    rollout(paused, RolloutState.PAUSED)
    healed = bare_deployment(admin, "healed", variant)
    rollout(healed, RolloutState.FAILED, minutes_ago=10)
    rollout(healed, RolloutState.SUCCEEDED, minutes_ago=5)  # the newest one counts
    looping = bare_deployment(admin, "looping", variant, replicas=2)
    for index in range(4):  # slot 0: created 4 times in 15 minutes = 3 replacements
        Replica.objects.create(
            deployment=looping,
            revision=looping.current_revision,
            slot=0,
            node=full,
            state=ReplicaState.STARTING if index == 3 else ReplicaState.GONE,
        )
    for index in range(2):  # slot 1: replaced once
        Replica.objects.create(
            deployment=looping,
            revision=looping.current_revision,
            slot=1,
            node=full,
            state=ReplicaState.AVAILABLE if index else ReplicaState.GONE,
        )
    Replica.objects.create(  # an old replacement outside the 15-minute window
        deployment=looping,
        revision=looping.current_revision,
        slot=1,
        node=full,
        state=ReplicaState.GONE,
        created_at=timezone.now() - timedelta(minutes=20),
    )
    return {
        "lost": lost,
        "full": full,
        "roomy": roomy,
        "failed": failed,
        "paused": paused,
        "looping": looping,
    }


def backlog(queue: str, messages: int) -> None:
    client = redis_client()
    client.delete(queue)
    if messages:
        client.rpush(queue, *[b"{}"] * messages)


def expected(fleet: dict[str, Any]) -> set[tuple[str, frozenset]]:
    broken = Rollout.objects.get(deployment=fleet["failed"])
    held = Rollout.objects.get(deployment=fleet["paused"])
    revision = str(fleet["looping"].current_revision.number)
    return {
        ("FleetNodeUnreachable", frozenset({"node": "lost"}.items())),
        ("FleetNodeDiskNearlyFull", frozenset({"node": "full"}.items())),
        (
            "FleetGpuMemoryNearlyFull",
            frozenset({"node": "full", "gpu": "0", "model": "NVIDIA L4"}.items()),
        ),
        (
            "FleetRolloutFailed",
            frozenset({"deployment": "broken", "rollout": str(broken.pk)}.items()),
        ),
        ("FleetRolloutPaused", frozenset({"deployment": "held", "rollout": str(held.pk)}.items())),
        (
            "FleetReplicaCrashLooping",
            frozenset({"deployment": "looping", "slot": "0", "revision": revision}.items()),
        ),
        ("FleetQueueDepthHigh", frozenset({"queue": f"node.{fleet['roomy'].pk}"}.items())),
    }


def console(active: list[alerts.ActiveAlert]) -> set[tuple[str, frozenset]]:
    return {(a.rule, frozenset(a.labels.items())) for a in active}


@pytest.fixture
def clean_pending() -> Any:
    client = redis_client()
    keys = [alerts.PENDING_KEY + rule.name for rule in alerts.RULES]
    client.delete(*keys)
    yield
    client.delete(*keys)


@pytest.mark.django_db
def test_the_console_lists_each_condition_with_a_link(
    personas, api_client_for, clean_pending
) -> None:
    fleet = troubled_fleet(personas["admin"])
    queue = f"node.{fleet['roomy'].pk}"
    backlog(queue, 101)
    try:
        active = alerts.active_alerts()
        assert console(active) == expected(fleet)
        by_rule = {a.rule: a for a in active}
        assert by_rule["FleetQueueDepthHigh"].state == "pending"  # not yet 5 minutes
        assert {a.state for a in active if a.rule != "FleetQueueDepthHigh"} == {"firing"}
        assert by_rule["FleetNodeUnreachable"].link == reverse(
            "nodes-detail", args=[fleet["lost"].pk]
        )
        assert by_rule["FleetRolloutFailed"].link == reverse(
            "deployments-detail", args=[fleet["failed"].pk]
        )
        assert by_rule["FleetReplicaCrashLooping"].link == reverse(
            "deployments-detail", args=[fleet["looping"].pk]
        )
        assert by_rule["FleetQueueDepthHigh"].link == reverse(
            "nodes-detail", args=[fleet["roomy"].pk]
        )
        assert "101 messages" in by_rule["FleetQueueDepthHigh"].detail

        page = api_client_for("viewer").get("/alerts/")
        html = page.content.decode()
        assert page.status_code == 200
        assert "Node lost is unreachable" in html
        assert f'href="{reverse("nodes-detail", args=[fleet["lost"].pk])}"' in html
        assert "Rollout of broken failed" in html
        assert 'data-state="pending"' in html
        badge = api_client_for("viewer").get("/alerts/badge/").content.decode()
        assert ">6<" in badge  # firing only; the queue alert is pending
        body = api_client_for("viewer").get("/api/v1/alerts/").json()
        assert {a["rule"] for a in body["alerts"]} == {name for name, _ in expected(fleet)}

        # a backlog seen for longer than the hold time fires
        client = redis_client()
        key = alerts.PENDING_KEY + "FleetQueueDepthHigh"
        field = alerts._labelkey({"queue": queue})
        client.hset(key, field, repr((timezone.now() - timedelta(minutes=6)).timestamp()))
        again = {a.rule: a for a in alerts.active_alerts()}
        assert again["FleetQueueDepthHigh"].state == "firing"
        # and a drained queue is forgotten: it starts over when it fills again
        backlog(queue, 0)
        assert "FleetQueueDepthHigh" not in {a.rule for a in alerts.active_alerts()}
        assert not client.hexists(key, field)
    finally:
        backlog(queue, 0)


@pytest.mark.django_db
def test_a_healthy_fleet_has_no_alerts(personas, api_client_for, clean_pending) -> None:
    node("fine")
    assert alerts.active_alerts() == []
    html = api_client_for("viewer").get("/alerts/").content.decode()
    assert "No active alerts" in html
    assert api_client_for("viewer").get("/alerts/badge/").content.decode().strip() == ""


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_prometheus_with_the_shipped_rules_agrees_with_the_console(
    personas, live_server, settings, tmp_path, clean_pending
) -> None:
    settings.FLEET_PROMETHEUS_TOKEN = SCRAPE_TOKEN
    fleet = troubled_fleet(personas["admin"])
    queue = f"node.{fleet['roomy'].pk}"
    backlog(queue, 101)
    base = live_server.url.replace("localhost", "127.0.0.1")
    server = PrometheusServer(
        tmp_path / "prometheus",
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [scrape_job("slm-fleet", base, SCRAPE_TOKEN)],
        },
        rules=[SHIPPED_RULES],
    )
    try:
        server.start()
        want = expected(fleet)

        def prometheus_alerts() -> set[tuple[str, frozenset]] | None:
            found = {
                (
                    a["labels"]["alertname"],
                    frozenset((k, v) for k, v in a["labels"].items() if k not in IGNORED_LABELS),
                    a["state"],
                )
                for a in server.api("alerts")["alerts"]
            }
            names = {(name, labels) for name, labels, _ in found}
            return found if names == want else None

        try:
            found = server.wait(prometheus_alerts, 60, "Prometheus did not raise the alerts")
        except AssertionError:
            raise AssertionError(
                f"Prometheus alerts {server.api('alerts')['alerts']}\n"
                f"targets {server.api('targets')['activeTargets']}\n{server.log()}"
            ) from None
        states = {name: state for name, _, state in found}
        assert states["FleetQueueDepthHigh"] == "pending"  # for: 5m
        assert {s for n, s in states.items() if n != "FleetQueueDepthHigh"} == {"firing"}
        active = alerts.active_alerts()
        assert console(active) == want
        assert {a.rule: a.state for a in active} == states
    finally:
        server.stop()
        backlog(queue, 0)
