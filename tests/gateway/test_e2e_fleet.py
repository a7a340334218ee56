"""End to end: the gateway in front of a real 2-replica llama.cpp deployment on real agents.

Agents join the live server, download the tiny GGUF through the mirror and start
llama-server containers; the deployment reconciler runs in a thread as beat would run it.
The official openai client talks to the gateway (the product's ASGI app under uvicorn)
while a replica's container is killed and while a rolling update with max_unavailable=0
replaces both replicas: no request may fail.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import openai
import pytest
from django.db import connection

from deployments import services as deployment_services
from deployments.models import Deployment
from gateway import services
from gateway.models import UsageDay
from tests.deployments import e2e
from tests.deployments.test_e2e_llamacpp import revise
from tests.fleet.agents import wait_until
from tests.gateway.support import ServedApp

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


class Load(threading.Thread):
    """Requests through the gateway in a loop, counting answers per replica and failures."""

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        super().__init__(name="gateway-load", daemon=True)
        self.client = client
        self.model = model
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.replicas: Counter[str] = Counter()
        self.tokens = [0, 0]

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    raw = self.client.completions.with_raw_response.create(
                        model=self.model, prompt="Hello", max_tokens=4
                    )
                    answer = raw.parse()
                    assert answer.usage is not None and answer.usage.completion_tokens > 0
                    self.replicas[raw.headers["x-fleet-replica"]] += 1
                    self.tokens[0] += answer.usage.prompt_tokens
                    self.tokens[1] += answer.usage.completion_tokens
                except Exception as exc:
                    self.failures.append(repr(exc))
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)

    @property
    def served(self) -> int:
        return sum(self.replicas.values())


def test_gateway_in_front_of_a_real_deployment(stage: e2e.Stage, operator_user: Any):
    runner, ctx = stage.runner, stage.ctx
    stage.configure(FLEET_GATEWAY_EJECT_SECONDS=2, FLEET_GATEWAY_REFRESH_MS=200)
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    e2e.start(runner, f"gw-a-{suffix}")
    e2e.start(runner, f"gw-b-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    served = ServedApp().start()
    name = f"gw-{suffix}"
    try:
        deployment = deployment_services.create_deployment(
            ctx, name, e2e.llamacpp_spec(variant, 2, max_unavailable=0)
        )
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 2), 90, message=why)
        key, secret = services.create_key(ctx, name="e2e-app")
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=secret, max_retries=0)

        # the official client completes and streams; requests spread across both replicas
        chat = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert chat.usage is not None and chat.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=4,
                stream=True,
            )
        )
        assert chunks and all(chunk.choices for chunk in chunks)
        load = Load(client, name)
        load.start()
        wait_until(lambda: load.served >= 20 or load.failures, 60, message=lambda: load.failures)
        assert set(load.replicas) == {str(r.pk) for r in e2e.available(deployment)}

        # kill one replica's container during the loop: no request fails
        victim = e2e.available(deployment)[0]
        before = load.served
        stage.docker_client.containers.get(victim.container_name).kill()
        wait_until(lambda: load.served >= before + 30 or load.failures, 60)
        assert load.failures == [], load.failures[:5]
        # the reconciler replaces it; the replacement joins the pool
        wait_until(lambda: e2e.settled(deployment, 2), 90, message=why)

        # a rolling update with max_unavailable=0 behind the gateway: no failed request
        deployment = revise(deployment, runtime_args={"context_size": 512, "threads": 1})
        target = deployment.current_revision_id
        wait_until(lambda: e2e.settled(deployment, 2), 120, message=why)
        new_ids = {str(r.pk) for r in e2e.available(deployment)}
        assert {r.revision_id for r in e2e.available(deployment)} == {target}
        after_rollout = load.served
        wait_until(
            lambda: (
                load.served >= after_rollout + 20 and all(load.replicas[rid] > 0 for rid in new_ids)
            ),
            60,
            message=lambda: (load.replicas, new_ids),
        )
        load.stop()
        assert load.failures == [], load.failures[:5]

        # usage adds up to the tokens the runtime reported (chat + stream + the loop)
        def recorded() -> bool:
            rows = UsageDay.objects.filter(key=key, deployment=name)
            return sum(r.requests for r in rows) == load.served + 2

        wait_until(recorded, 15, message=lambda: list(UsageDay.objects.values()))
        row = UsageDay.objects.get(key=key, deployment=name)
        stream_completion = row.completion_tokens - load.tokens[1] - chat.usage.completion_tokens
        assert 0 < stream_completion <= 4
        assert row.prompt_tokens > load.tokens[0] + chat.usage.prompt_tokens
        assert row.errors == 0
        assert Deployment.objects.filter(name=name).exists()
    finally:
        served.stop()
        loop.stop()
        e2e.remove_containers(stage.docker_client, f"fleet-{name}")
        time.sleep(0)
