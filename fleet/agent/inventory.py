"""The node inventory the agent sends with every heartbeat (every few seconds).

``collect_inventory`` returns a JSON-safe dict whose shape the control plane validates:
host, CPU, memory, the data directory's disk, GPUs (NVML), the Docker engine and the
fleet's containers on this node. Facts that cannot change while the agent runs (CPU model,
OS, kernel, architecture) are read once per process; the rest are cheap reads.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import platform
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from fleet.agent.docker_driver import DockerDriver
from fleet.agent.errors import AdapterError, DockerUnavailable
from fleet.agent.gpus import read_gpus
from fleet.agent.state import AgentState

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
CPUINFO_PATH = Path("/proc/cpuinfo")
# /proc/cpuinfo keys naming the CPU, by architecture (x86, POWER/ARM boards, s390x).
_CPUINFO_MODEL_KEYS = ("model name", "cpu model", "hardware", "processor", "cpu")


def collect_inventory(
    *, data_dir: Path, docker: DockerDriver, node_id: str | None, agent_version: str
) -> dict[str, Any]:
    """This host's inventory; never raises for an unreachable engine or a failed GPU read.

    ``node_id`` None (an agent not yet registered) reports no containers.
    """
    engine = docker.engine_info()
    containers: list[dict[str, Any]] = []
    if engine["reachable"] and node_id is not None:
        try:
            containers = docker.list_managed(node_id)
        except DockerUnavailable as exc:
            engine = {**engine, "reachable": False, "error": exc.message}
        except AdapterError as exc:
            engine = {**engine, "error": exc.message}

    gpu_readout = read_gpus()
    memory = psutil.virtual_memory()
    disk_total, disk_free = _disk_usage(data_dir)
    return {
        "agent_version": agent_version,
        "sent_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "host": {
            "hostname": socket.gethostname(),
            "os": os_name(),
            "kernel": platform.release(),
            "arch": platform.machine(),
            "address": host_address(data_dir),
            # where replicas listen, when not at ``address`` (e.g. 0.0.0.0 behind a firewall)
            "replica_bind": os.environ.get("FLEET_AGENT_REPLICA_BIND", "").strip(),
        },
        "cpu": {
            "model": cpu_model(),
            "cores": os.cpu_count() or 1,
            "load_1m": round(os.getloadavg()[0], 2),
            "usage_percent": _cpu_usage_percent(),
        },
        "memory": {"total_bytes": int(memory.total), "available_bytes": int(memory.available)},
        "disk": {"path": str(data_dir), "total_bytes": disk_total, "free_bytes": disk_free},
        "gpus": [dict(gpu) for gpu in gpu_readout.gpus],
        "gpu_driver": {
            "driver_version": gpu_readout.driver_version,
            "cuda_version": gpu_readout.cuda_version,
            "error": gpu_readout.error,
        },
        "docker": engine,
        "containers": containers,
    }


def host_address(data_dir: Path) -> str:
    """The IPv4 address the control plane can reach this host's replicas at.

    ``FLEET_AGENT_ADDRESS`` when set; else 127.0.0.1 when the agent's --server (from its
    state file) is on loopback or unknown (not joined yet); else the address of the
    interface that routes to the server (a UDP "connect" sends nothing).
    """
    override = os.environ.get("FLEET_AGENT_ADDRESS", "").strip()
    if override:
        return override
    try:
        state = AgentState.load(data_dir)
    except SystemExit:  # an unreadable state file: the agent reports that elsewhere
        state = None
    return _address_towards(state.server if state else "")


@functools.cache
def _address_towards(server: str) -> str:
    parts = urlsplit(server)
    host = parts.hostname or ""
    if not host or host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1"
    except ValueError:
        pass  # a name: resolve it below
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, parts.port or 443))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


@functools.cache
def os_name() -> str:
    """PRETTY_NAME from os-release ("Debian GNU/Linux 12 (bookworm)"), else the platform."""
    for path in OS_RELEASE_PATHS:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "PRETTY_NAME" and value.strip():
                return value.strip().strip("\"'")
    return platform.platform(terse=True)


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        text = CPUINFO_PATH.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and value.strip() and key not in fields:
            fields[key] = value.strip()
    for key in _CPUINFO_MODEL_KEYS:
        value = fields.get(key, "")
        if value and not value.isdigit():  # x86's "processor: 0" is an index, not a name
            return value
    return platform.processor() or platform.machine() or "unknown"


_cpu_percent_primed = False


def _cpu_usage_percent() -> float | None:
    """System CPU use since the previous call; None on the first call (nothing to compare)."""
    global _cpu_percent_primed
    value = float(psutil.cpu_percent(interval=None))
    if not _cpu_percent_primed:
        _cpu_percent_primed = True
        return None
    return value


def _disk_usage(path: Path) -> tuple[int, int]:
    """Total and free bytes of the file system holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return int(usage.total), int(usage.free)
