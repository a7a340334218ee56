"""Monitoring tests: per-process caches start empty (ids are reused across test databases).

The end-to-end fixtures (real agents, Docker, the job workers, the llama.cpp image) come from
the deployments and agent tests, as in tests/deployments/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitoring import partitions, receive
from monitoring.ingest import caches
from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, reconciler  # noqa: F401
from tests.fleet import test_agent_downloads_e2e as agent_e2e
from tests.fleet.test_agent_downloads_e2e import ctx, plane, proxied, runner  # noqa: F401

node_ids = agent_e2e.node_ids


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    caches.clear()
    partitions.forget()
    receive._credentials.clear()
    yield
    caches.clear()
    receive._credentials.clear()


@pytest.fixture
async def metrics_fastpath():
    """Stop this loop's metrics batcher after the test and close its thread's connection."""
    from channels.db import database_sync_to_async
    from django.db import connections

    from monitoring import asgi_fastpath

    yield
    await asgi_fastpath.batchers.close_all()
    await database_sync_to_async(connections.close_all)()
