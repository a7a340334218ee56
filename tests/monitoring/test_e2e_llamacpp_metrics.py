"""End to end: a real agent scrapes a real llama.cpp container after real completions.

A llama.cpp deployment runs on one real agent (real Docker, the local llama-server image,
the tiny GGUF); the agent collects every second; after completions the stored, normalised
series of that replica show generated tokens/s above zero, container CPU and memory from
the engine, and the node's CPU/RAM/disk. The REST snapshot the pages load shows them too.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from core.history import ChangeContext
from deployments import services
from fleet import services as fleet_services
from fleet.choices import NodeState
from fleet.models import Node
from monitoring.models import Sample, Series
from tests.deployments import e2e
from tests.fleet.agents import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


def start_agent(agents: Any, name: str) -> Node:
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    agent = agents.start(name, join_token=key, extra=["--metrics-interval", "1"])

    def ready() -> Node | None:
        if not agent.running():
            raise AssertionError(f"agent {name} exited\n{agent.tail()}")
        return Node.objects.filter(name=name, state=NodeState.READY).first()

    return wait_until(ready, 40, message=agents.tails)


def series_values(replica_id: int, name: str) -> list[float]:
    return list(
        Sample.objects.filter(series__replica_id=replica_id, series__name=name)
        .order_by("ts")
        .values_list("value", flat=True)
    )


def test_agent_scrapes_llamacpp_and_stores_normalised_series(stage: e2e.Stage, viewer_user):
    runner, context = stage.runner, stage.ctx
    stage.configure()
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    node = start_agent(runner, f"metrics-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    try:
        deployment = services.create_deployment(
            context, f"m-{suffix}", e2e.llamacpp_spec(variant, 1)
        )
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 90, message=why)
        (replica,) = e2e.available(deployment)

        # before any request the runtime's gauges arrive; counters need two scrapes
        wait_until(lambda: series_values(replica.pk, "requests_running"), 20, message=runner.tails)

        def generating() -> list[float]:
            for _ in range(3):
                answer = requests.post(
                    f"http://127.0.0.1:{replica.host_port}/completion",
                    json={"prompt": "Hello there", "n_predict": 32},
                    timeout=30,
                )
                answer.raise_for_status()
                assert answer.json()["tokens_predicted"] > 0
            return [v for v in series_values(replica.pk, "generated_tokens_per_s") if v > 0]

        rates = wait_until(generating, 30, interval=1.0, message=runner.tails)
        assert max(rates) > 0
        assert [v for v in series_values(replica.pk, "prompt_tokens_per_s") if v > 0]
        assert [v for v in series_values(replica.pk, "time_per_token_s") if v > 0]
        wait_until(lambda: series_values(replica.pk, "cpu_percent"), 10, message=runner.tails)
        assert series_values(replica.pk, "memory_bytes")[-1] > 1_000_000  # a loaded model
        assert series_values(replica.pk, "restarts")[-1] == 0.0
        node_series = set(
            Series.objects.filter(node=node, replica_id=0).values_list("name", flat=True)
        )
        assert {"cpu_percent", "memory_used_bytes", "disk_used_bytes"} <= node_series
        assert (
            Series.objects.get(replica_id=replica.pk, name="generated_tokens_per_s").deployment_id
            == deployment.pk
        )

        client = APIClient()
        client.force_login(viewer_user)
        snapshot = client.get(
            f"/api/v1/metrics/?deployment={deployment.pk}&names=generated_tokens_per_s"
        ).json()
        (series,) = snapshot["series"]
        assert series["replica"] == replica.pk
        assert any(value > 0 for _, value in series["points"])
    finally:
        loop.stop()
        runner.stop_all()
        e2e.remove_containers(stage.docker_client, f"fleet-m-{suffix}")
