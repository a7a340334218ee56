"""Fixtures of the benchmark tests: real agents, llama.cpp replicas, the control worker."""

from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, reconciler  # noqa: F401
from tests.fleet.test_agent_downloads_e2e import (  # noqa: F401
    ctx,
    node_ids,
    plane,
    proxied,
    runner,
)
