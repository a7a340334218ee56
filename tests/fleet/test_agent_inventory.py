"""collect_inventory on this real host: the shape the control plane validates."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from fleet.agent import inventory
from fleet.agent.docker_driver import LABEL_MANAGED, LABEL_NODE, DockerDriver
from fleet.agent.inventory import collect_inventory

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_VERSION = "0.1.0-test"


@pytest.fixture
def driver() -> Iterator[DockerDriver]:
    with DockerDriver() as driver:
        yield driver


def _collect(data_dir: Path, driver: DockerDriver, node_id: str | None = "node-x") -> dict:
    result = collect_inventory(
        data_dir=data_dir, docker=driver, node_id=node_id, agent_version=AGENT_VERSION
    )
    assert json.loads(json.dumps(result)) == result  # JSON-safe, nothing lost
    return result


def _assert_types(section: dict[str, Any], types: dict[str, type | tuple[type, ...]]) -> None:
    assert set(section) == set(types)
    for key, expected in types.items():
        assert isinstance(section[key], expected), (key, section[key])


def test_inventory_shape_on_this_host(tmp_path: Path, driver: DockerDriver) -> None:
    result = _collect(tmp_path, driver)

    assert set(result) == {
        "agent_version",
        "sent_at",
        "host",
        "cpu",
        "memory",
        "disk",
        "gpus",
        "gpu_driver",
        "docker",
        "containers",
    }
    assert result["agent_version"] == AGENT_VERSION
    assert result["sent_at"].endswith("Z")
    sent_at = datetime.fromisoformat(result["sent_at"])
    assert sent_at.tzinfo is not None
    assert abs(datetime.now(UTC) - sent_at) < timedelta(seconds=10)

    _assert_types(
        result["host"],
        {
            "hostname": str,
            "os": str,
            "kernel": str,
            "arch": str,
            "address": str,
            "replica_bind": str,
        },
    )
    assert result["host"]["kernel"] == platform.release()
    assert result["host"]["arch"] == platform.machine()
    assert result["host"]["hostname"]

    _assert_types(
        result["cpu"],
        {"model": str, "cores": int, "load_1m": float, "usage_percent": (float, type(None))},
    )
    assert result["cpu"]["model"]
    assert result["cpu"]["cores"] == os.cpu_count()
    assert result["cpu"]["load_1m"] >= 0

    _assert_types(result["memory"], {"total_bytes": int, "available_bytes": int})
    assert 0 < result["memory"]["available_bytes"] <= result["memory"]["total_bytes"]

    _assert_types(result["disk"], {"path": str, "total_bytes": int, "free_bytes": int})
    assert result["disk"]["path"] == str(tmp_path)
    assert 0 < result["disk"]["free_bytes"] <= result["disk"]["total_bytes"]

    # no NVIDIA driver here: no GPUs, and that is not an error
    assert result["gpus"] == []
    assert result["gpu_driver"] == {"driver_version": None, "cuda_version": None, "error": None}

    assert result["docker"]["reachable"] is True
    assert result["docker"]["error"] is None
    assert result["docker"]["version"]
    assert result["containers"] == []


def test_os_comes_from_os_release() -> None:
    release = Path("/etc/os-release")
    if not release.is_file():
        pytest.skip("no /etc/os-release on this host")
    pretty = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in release.read_text().splitlines()
        if line.startswith("PRETTY_NAME=")
    )
    assert inventory.os_name() == pretty


def test_cpu_usage_is_known_from_the_second_report(tmp_path: Path, driver: DockerDriver) -> None:
    _collect(tmp_path, driver)
    second = _collect(tmp_path, driver)

    usage = second["cpu"]["usage_percent"]
    assert isinstance(usage, float)
    assert 0.0 <= usage <= 100.0


def test_disk_of_a_data_dir_not_created_yet(tmp_path: Path, driver: DockerDriver) -> None:
    data_dir = tmp_path / "not" / "yet"

    result = _collect(data_dir, driver)

    assert result["disk"]["path"] == str(data_dir)
    assert result["disk"]["total_bytes"] > 0


def test_inventory_lists_this_nodes_containers(
    tmp_path: Path, driver: DockerDriver, docker_client: DockerClient, busybox_image: str
) -> None:
    node_id = f"node-inv-{os.getpid()}"
    container = docker_client.containers.run(
        busybox_image,
        ["/bin/busybox", "sleep", "300"],
        labels={
            LABEL_MANAGED: "true",
            LABEL_NODE: node_id,
            "fleet.test-exempt": "inventory test, a busybox stand-in",
        },
        network_mode="host",
        init=True,
        detach=True,
    )
    try:
        result = _collect(tmp_path, driver, node_id=node_id)
    finally:
        docker_client.api.remove_container(container.id, force=True)

    assert [(c["id"], c["state"]) for c in result["containers"]] == [(container.id[:12], "running")]


def test_unregistered_node_reports_no_containers(tmp_path: Path, driver: DockerDriver) -> None:
    assert _collect(tmp_path, driver, node_id=None)["containers"] == []


def test_unreachable_engine_still_gives_an_inventory(tmp_path: Path) -> None:
    driver = DockerDriver(base_url="unix:///nonexistent.sock", timeout=1)

    result = _collect(tmp_path, driver)

    assert result["docker"]["reachable"] is False
    assert result["docker"]["error"]
    assert result["containers"] == []
    assert result["memory"]["total_bytes"] > 0


def test_agent_code_imports_no_django() -> None:
    """The agent runs on hosts without the control plane's settings."""
    code = (
        "import sys\n"
        "import fleet.agent.inventory, fleet.agent.gpus, fleet.agent.docker_driver\n"
        "import fleet.agent.errors\n"
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not loaded, loaded\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr


def test_replica_addresses_come_from_the_environment(
    tmp_path: Path, driver: DockerDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_AGENT_ADDRESS", "192.0.2.10")
    monkeypatch.setenv("FLEET_AGENT_REPLICA_BIND", " 0.0.0.0 ")
    host = _collect(tmp_path, driver)["host"]
    assert host["address"] == "192.0.2.10"
    assert host["replica_bind"] == "0.0.0.0"  # noqa: S104 - what the operator asked for
    monkeypatch.delenv("FLEET_AGENT_REPLICA_BIND")
    assert _collect(tmp_path, driver)["host"]["replica_bind"] == ""  # binds the address
