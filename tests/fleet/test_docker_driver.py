"""DockerDriver against the real local Docker engine (containers on the host network)."""

from __future__ import annotations

import contextlib
import copy
import pickle
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from docker.client import DockerClient
from docker.errors import NotFound

from fleet.agent.docker_driver import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_REVISION,
    LABEL_SLOT,
    DockerDriver,
    _translated_errors,
)
from fleet.agent.errors import AdapterError, DockerError, DockerUnavailable

MISSING_SOCKET = "unix:///nonexistent.sock"
# busybox stand-ins, not hardened: the session's hardening watcher skips them (tests/hardening.py)
EXEMPT = {"fleet.test-exempt": "docker-driver listing test, a busybox stand-in"}


@pytest.fixture
def driver() -> Iterator[DockerDriver]:
    with DockerDriver() as driver:
        yield driver


@pytest.fixture
def make_container(docker_client: DockerClient, busybox_image: str) -> Iterator[Callable[..., Any]]:
    """Create busybox containers (host network, init); every one is removed by id after."""
    created: list[str] = []

    def make(labels: dict[str, str], *, start: bool = True) -> Any:
        container = docker_client.containers.create(
            busybox_image,
            ["/bin/busybox", "sleep", "300"],
            name=f"fleet-test-{uuid.uuid4().hex[:10]}",
            labels=labels,
            network_mode="host",
            init=True,
        )
        created.append(container.id)
        if start:
            container.start()
            container.reload()
        return container

    yield make
    for container_id in created:
        with contextlib.suppress(NotFound):
            docker_client.api.remove_container(container_id, force=True)


def _labels(node_id: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_NODE: node_id, **EXEMPT, **extra}


def test_label_keys_share_the_fleet_prefix() -> None:
    assert LABEL_MANAGED == "fleet.managed"
    assert LABEL_NODE == "fleet.node"
    assert (LABEL_DEPLOYMENT, LABEL_REVISION, LABEL_SLOT) == (
        "fleet.deployment",
        "fleet.revision",
        "fleet.slot",
    )


def test_engine_info_describes_the_local_engine(
    driver: DockerDriver, docker_client: DockerClient
) -> None:
    info = driver.engine_info()
    expected = docker_client.version()
    assert info["reachable"] is True
    assert info["error"] is None
    assert info["version"] == expected["Version"]
    assert info["api_version"] == expected["ApiVersion"]
    assert info["storage_driver"] == docker_client.info()["Driver"]
    assert isinstance(info["os"], str) and info["os"]
    assert isinstance(info["kernel"], str) and info["kernel"]
    assert driver.engine_info() == info  # the second call is served partly from cache


def test_list_managed_returns_only_this_nodes_containers(
    driver: DockerDriver, make_container: Callable[..., Any]
) -> None:
    node_a, node_b = f"node-a-{uuid.uuid4().hex[:8]}", f"node-b-{uuid.uuid4().hex[:8]}"
    first = make_container(
        _labels(node_a, **{LABEL_DEPLOYMENT: "7", LABEL_REVISION: "3", LABEL_SLOT: "0"}),
    )
    second = make_container(_labels(node_a, **{LABEL_SLOT: "1", "com.example.team": "ml"}))
    make_container(_labels(node_b))
    make_container({LABEL_NODE: node_a})  # not marked as managed by the fleet
    make_container({LABEL_MANAGED: "false", LABEL_NODE: node_a})

    listed = {item["id"]: item for item in driver.list_managed(node_a)}

    assert set(listed) == {first.id[:12], second.id[:12]}
    item = listed[first.id[:12]]
    assert item["name"] == first.name
    assert item["image"] == "fleet-test/busybox:latest"
    assert item["state"] == "running"
    assert item["status"].startswith("Up")
    created = datetime.fromisoformat(item["created"])
    assert item["created"].endswith("Z")
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert item["labels"] == {
        **EXEMPT,
        LABEL_MANAGED: "true",
        LABEL_NODE: node_a,
        LABEL_DEPLOYMENT: "7",
        LABEL_REVISION: "3",
        LABEL_SLOT: "0",
    }
    # labels outside the fleet's namespace are not reported
    assert listed[second.id[:12]]["labels"] == _labels(node_a, **{LABEL_SLOT: "1"})
    assert all(entry["state"] == "running" for entry in listed.values())
    assert [entry["id"] for entry in driver.list_managed(node_b)] != []
    assert driver.list_managed(f"node-none-{uuid.uuid4().hex[:8]}") == []


def test_list_managed_includes_stopped_containers(
    driver: DockerDriver, make_container: Callable[..., Any]
) -> None:
    node_id = f"node-{uuid.uuid4().hex[:8]}"
    never_started = make_container(_labels(node_id), start=False)

    [item] = driver.list_managed(node_id)

    assert item["id"] == never_started.id[:12]
    assert item["state"] == "created"


def test_unreachable_engine_is_reported_not_raised() -> None:
    driver = DockerDriver(base_url=MISSING_SOCKET, timeout=1)

    info = driver.engine_info()

    assert info["reachable"] is False
    assert isinstance(info["error"], str) and info["error"]
    assert info["version"] is None and info["storage_driver"] is None


def test_list_managed_on_unreachable_engine_raises_retryable_error() -> None:
    driver = DockerDriver(base_url=MISSING_SOCKET, timeout=1)

    with pytest.raises(DockerUnavailable) as raised:
        driver.list_managed("node-1")

    assert raised.value.retryable is True
    assert isinstance(raised.value, AdapterError)
    driver.close()


def test_engine_error_is_a_docker_error_saying_whether_to_retry(
    driver: DockerDriver,
) -> None:
    client = driver._connect()
    with pytest.raises(DockerError) as raised, _translated_errors("inspect a container"):
        client.api.inspect_container(f"fleet-missing-{uuid.uuid4().hex}")
    assert raised.value.retryable is False  # a 404 will not heal by itself
    assert "inspect a container" in raised.value.message


@pytest.mark.parametrize(
    "error",
    [
        DockerUnavailable("gone"),
        DockerError("boom", retryable=True),
        AdapterError("x", retryable=False),
    ],
)
def test_adapter_errors_survive_pickling_and_copying(error: AdapterError) -> None:
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):  # noqa: S301
        assert type(clone) is type(error)
        assert (clone.message, clone.retryable) == (error.message, error.retryable)
