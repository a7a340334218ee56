"""A real Prometheus scrapes the control plane and, through its service discovery, a real
llama.cpp replica (real agent, real Docker, the locally built llama-server image).

Also proves that every runtime metric the Grafana dashboards chart is one the real server
exports, and that Prometheus stores it with the discovery labels.
"""

from __future__ import annotations

import random
import uuid

import pytest
import requests

from deployments import services
from deployments.models import Replica
from tests.deployments import e2e
from tests.fleet.agents import wait_until
from tests.monitoring.prometheus import promql
from tests.monitoring.prometheus.promserver import PrometheusServer, scrape_job, sd_job
from tests.monitoring.prometheus.test_rules_and_dashboards import used_metrics

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

SCRAPE_TOKEN = "e2e-scrape-token-0123456789"


def test_prometheus_scrapes_the_control_plane_and_the_discovered_replicas(
    stage: e2e.Stage, live_server, tmp_path
) -> None:
    # ports of our own: other test runs on this host place replicas from 20000 up
    low = random.randrange(30000, 39000, 100)  # noqa: S311 - spreading ports, not secrets
    stage.configure(FLEET_PROMETHEUS_TOKEN=SCRAPE_TOKEN, FLEET_REPLICA_PORT_RANGE=(low, low + 99))
    runner, ctx = stage.runner, stage.ctx
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    _, node = e2e.start(runner, f"prom-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    server: PrometheusServer | None = None
    try:
        deployment = services.create_deployment(
            ctx, f"prom-{suffix}", e2e.llamacpp_spec(variant, 1)
        )
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 120, message=why)
        (first,) = e2e.available(deployment)
        assert e2e.completion(first.host_port)["tokens_predicted"] > 0

        # the runtime's own exposition has every llamacpp:* series the dashboards chart
        exposition = requests.get(f"http://127.0.0.1:{first.host_port}/metrics", timeout=10)
        assert exposition.status_code == 200
        runtime_names = promql.exported(exposition.text)
        charted = {name for name in used_metrics() if name.startswith("llamacpp:")}
        assert charted and charted <= runtime_names, charted - runtime_names

        base = live_server.url.replace("localhost", "127.0.0.1")
        server = PrometheusServer(
            tmp_path / "prometheus",
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    scrape_job("slm-fleet", base, SCRAPE_TOKEN),
                    sd_job("slm-fleet-replicas", base, SCRAPE_TOKEN),
                ],
            },
        ).start()

        def all_up() -> list[dict] | None:
            targets = server.api("targets", state="active")["activeTargets"]
            jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
            return targets if jobs == {"slm-fleet", "slm-fleet-replicas"} else None

        try:
            targets = server.wait(all_up, 60, "the targets did not come up")
        except AssertionError:
            raise AssertionError(f"{server.api('targets')}\n{server.log()}\n{why()}") from None
        (discovered,) = [
            t for t in targets if t["labels"]["job"] == "slm-fleet-replicas" and t["health"] == "up"
        ]
        labels = discovered["labels"]
        # the replica Prometheus found is the deployment's serving one (if the reconciler
        # replaced the first meanwhile, the discovery followed: the labels say which)
        replica = Replica.objects.select_related("revision", "node").get(pk=labels["replica"])
        assert replica.deployment_id == deployment.pk, why()
        assert discovered["scrapeUrl"] == f"http://127.0.0.1:{replica.host_port}/metrics"
        assert labels["deployment"] == deployment.name
        assert labels["revision"] == str(replica.revision.number)
        assert labels["node"] == node.name == replica.node.name
        assert labels["runtime"] == "llamacpp"
        assert labels["model"] == variant.model.repo_id
        assert labels["slot"] == "0"

        if replica.pk != first.pk:
            print(f"replica {first.pk} was replaced by {replica.pk}:\n{why()}")
        assert e2e.completion(replica.host_port)["tokens_predicted"] > 0

        # the generated tokens are in Prometheus, with the discovery labels
        query = f'llamacpp:tokens_predicted_total{{deployment="{deployment.name}"}}'

        def stored() -> list[dict] | None:
            result = server.api("query", query=query)["result"]
            return result if result and float(result[0]["value"][1]) > 0 else None

        (series,) = server.wait(stored, 30, f"{query} has no positive sample")
        assert series["metric"]["node"] == node.name
        # and the control plane's own series, from the same scrape loop
        nodes = server.api("query", query=f'fleet_node_state{{node="{node.name}",state="ready"}}')
        assert [float(r["value"][1]) for r in nodes["result"]] == [1.0]
        available = server.api(
            "query", query=f'fleet_deployment_replicas_available{{deployment="{deployment.name}"}}'
        )
        assert [float(r["value"][1]) for r in available["result"]] == [1.0]
    finally:
        if server is not None:
            server.stop()
        loop.stop()
        e2e.remove_containers(stage.docker_client, f"fleet-prom-{suffix}")
