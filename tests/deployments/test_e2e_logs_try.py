"""End to end: logs and "try it" on a real agent, real Docker and the real llama-server.

One replica: try it answers with tokens and timings; its logs (through a ``replica_logs``
command answered by the agent) hold llama-server's startup lines; after the container is
killed by hand and the replica replaced, the old replica's kept lines are still there (the
container and its Docker logs are gone: only the control plane's copy is left).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from deployments import logs, services, try_it
from deployments.models import Replica
from deployments.rollouts import LIVE
from models_catalog.models import CatalogModel
from tests.deployments.test_e2e_llamacpp import (  # noqa: F401
    DeploymentLoop,
    available,
    control_worker,
    docker_client,
    explain,
    reconciler,
    settled,
)
from tests.downloads_support import import_variant
from tests.fleet.agents import wait_until
from tests.fleet.test_agent_downloads_e2e import (  # noqa: F401
    ctx,
    node_ids,
    plane,
    proxied,
    runner,
    start,
)
from tests.hubserver.repos import add_repo
from tests.runtimes.fixtures import llama_cpp_tools, llama_server_image, tiny_gguf  # noqa: F401

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


def test_logs_and_try_it_end_to_end(
    settings,
    runner,  # noqa: F811
    control_worker,  # noqa: F811
    reconciler,  # noqa: F811
    ctx,  # noqa: F811
    hub_root: Path,
    tiny_gguf: Path,  # noqa: F811
    llama_server_image: str,  # noqa: F811
    docker_client,  # noqa: F811
):
    began = time.monotonic()
    settings.FLEET_IMAGE_LLAMACPP = llama_server_image
    settings.FLEET_ORPHAN_GRACE_SECONDS = 2
    settings.FLEET_REPLICA_START_WAIT_SECONDS = 2
    settings.FLEET_REPLICA_RESEND_SECONDS = 3
    repo = f"acme/tiny-gguf-{uuid.uuid4().hex[:6]}"
    add_repo(hub_root, repo, [{"tiny-F16.gguf": tiny_gguf}])
    variant = import_variant(ctx, repo)
    CatalogModel.objects.filter(pk=variant.model_id).update(licence="apache-2.0")
    suffix = uuid.uuid4().hex[:6]
    start(runner, f"e2e-logs-{suffix}")
    loop = DeploymentLoop()
    loop.start()
    try:
        deployment = services.create_deployment(
            ctx,
            f"e2e-logs-{suffix}",
            {
                "variant": variant.pk,
                "runtime": "llamacpp",
                "replicas": 1,
                "runtime_args": {"context_size": 256, "threads": 1},
                "strategy": {
                    "max_surge": 1,
                    "max_unavailable": 1,
                    "min_healthy_seconds": 1,
                    "healthy_deadline_seconds": 30,
                    "progress_deadline_seconds": 60,
                },
            },
        )
        why = lambda: explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: settled(deployment, 1), 60, message=why)

        result = try_it.try_completion(deployment, "Hello", 8)
        assert result.completion_tokens and result.completion_tokens > 0, result
        assert 0 < result.ttfb_ms <= result.total_ms < 60_000

        (victim,) = available(deployment)
        lines = fetch_logs(victim, "listening on http")
        assert all(line[:4].isdigit() and line[29] == "Z" for line in lines), lines[:3]

        docker_client.containers.get(victim.container_name).kill()

        def replaced() -> bool:
            victim.refresh_from_db()
            return victim.state not in LIVE and settled(deployment, 1)

        wait_until(replaced, 60, message=why)
        # The failed replica's exited container stays (its crash logs are still readable);
        # what the platform itself kept from earlier fetches is checked next.
        kept = logs.kept_lines(logs.collect(victim))
        assert kept == lines[: len(kept)] and any("listening on http" in x for x in kept)
        (successor,) = available(deployment)
        assert successor.pk != victim.pk
        fetch_logs(successor, "listening on http")
        assert try_it.try_completion(deployment, "Hi", 4).completion_tokens
    finally:
        loop.stop()
    assert time.monotonic() - began < 90
