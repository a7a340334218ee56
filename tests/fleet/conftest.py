"""Fixtures for the node agent's tests: the real Docker engine and a tiny local image.

No registry is reachable, so the image is built here: a root file system holding the
host's statically linked busybox, imported with ``docker import``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient, from_env
from docker.errors import DockerException, ImageNotFound

BUSYBOX_IMAGE = "fleet-test/busybox:latest"
BUSYBOX_PATH = Path("/bin/busybox")  # Debian's busybox-static


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    try:
        client = from_env(timeout=30)
    except DockerException as exc:
        pytest.fail(f"these tests need a running Docker engine (see shared/FACTS.md): {exc}")
    yield client
    client.close()


def _busybox_rootfs_tar() -> bytes:
    if not BUSYBOX_PATH.is_file():
        pytest.fail(f"{BUSYBOX_PATH} is missing: install Debian's busybox-static")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("bin")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        tar.add(BUSYBOX_PATH, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type = tarfile.SYMTYPE
        link.linkname = "busybox"
        link.mode = 0o777
        tar.addfile(link)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_client: DockerClient) -> str:
    """``fleet-test/busybox:latest``, imported once and reused across sessions."""
    return ensure_busybox_image(docker_client)


def ensure_busybox_image(docker_client: DockerClient) -> str:
    """Import ``fleet-test/busybox:latest`` into the engine unless it is there already."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
    except ImageNotFound:
        repository, tag = BUSYBOX_IMAGE.rsplit(":", 1)
        docker_client.api.import_image_from_data(
            _busybox_rootfs_tar(), repository=repository, tag=tag
        )
        docker_client.images.get(BUSYBOX_IMAGE)  # fails the fixture if the import did not
    return BUSYBOX_IMAGE


class SentOrders:
    """Orders on the real node queues: stale ones are dropped at the start of the test."""

    def __init__(self) -> None:
        from fleet.models import Node
        from tests.broker import NodeQueues

        self.queues = NodeQueues()
        self.names = [f"node.{pk}" for pk in Node.objects.values_list("pk", flat=True)]
        self.queues.drain(*self.names)

    def drain(self) -> list[dict[str, Any]]:
        return self.queues.drain(*self.names)


@pytest.fixture
def sent_tasks(db) -> SentOrders:
    """What was sent to the queues of the nodes that exist when the fixture is set up."""
    return SentOrders()
