"""End to end: logs and "try it" on a real agent, real Docker and the real llama-server.

One replica: try it answers with tokens and timings; its logs (through a ``replica_logs``
command answered by the agent) hold llama-server's startup lines; after the container is
killed by hand and the replica replaced, the old replica's kept lines are still there (the
container and its Docker logs are gone: only the control plane's copy is left).
"""

from __future__ import annotations

import time
import uuid

import pytest

from deployments import logs, services, try_it
from deployments.models import Replica
from deployments.rollouts import LIVE
from tests.deployments import e2e
from tests.fleet.agents import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def fetch_logs(replica: Replica, needle: str, timeout: float = 20) -> list[str]:
    """Poll like the page does: request, merge, until a kept line contains ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replica.refresh_from_db()
        if logs.can_fetch(replica):
            logs.request_logs(services_ctx(), replica)
        lines = logs.kept_lines(logs.collect(replica))
        if any(needle in line for line in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in the logs: {logs.kept_lines(replica)[-10:]}")


def services_ctx():  # type: ignore[no-untyped-def]
    from core.history import ChangeContext

    return ChangeContext.system("e2e-logs")


def test_logs_and_try_it_end_to_end(stage: e2e.Stage):
    runner, ctx, docker_client = stage.runner, stage.ctx, stage.docker_client
    began = time.monotonic()
    stage.configure()
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    e2e.start(runner, f"e2e-logs-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    try:
        deployment = services.create_deployment(
            ctx, f"e2e-logs-{suffix}", e2e.llamacpp_spec(variant, 1, max_unavailable=1)
        )
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 60, message=why)

        result = try_it.try_completion(deployment, "Hello", 8)
        assert result.completion_tokens and result.completion_tokens > 0, result
        assert 0 < result.ttfb_ms <= result.total_ms < 60_000

        (victim,) = e2e.available(deployment)
        lines = fetch_logs(victim, "listening on http")
        assert all(line[:4].isdigit() and line[29] == "Z" for line in lines), lines[:3]

        docker_client.containers.get(victim.container_name).kill()

        def replaced() -> bool:
            victim.refresh_from_db()
            return victim.state not in LIVE and e2e.settled(deployment, 1)

        wait_until(replaced, 60, message=why)
        # The failed replica's exited container stays (its crash logs are still readable);
        # what the platform itself kept from earlier fetches is checked next.
        kept = logs.kept_lines(logs.collect(victim))
        assert kept == lines[: len(kept)] and any("listening on http" in x for x in kept)
        (successor,) = e2e.available(deployment)
        assert successor.pk != victim.pk
        fetch_logs(successor, "listening on http")
        assert try_it.try_completion(deployment, "Hi", 4).completion_tokens
    finally:
        loop.stop()
    assert time.monotonic() - began < 90
