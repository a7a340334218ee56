"""Fixtures of the fault suite: the end-to-end deployment stage (real agents, Docker,
llama-server, job workers, the reconciler and the liveness sweep in threads)."""

from __future__ import annotations

from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, reconciler  # noqa: F401
from tests.fleet import test_agent_downloads_e2e as agent_e2e
from tests.fleet.test_agent_downloads_e2e import ctx, plane, proxied, runner  # noqa: F401

node_ids = agent_e2e.node_ids
