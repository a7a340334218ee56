"""What the collector reads besides the runtimes: the Docker engine, the host, the GPUs.

Container figures come from one engine call per container (``stats`` with ``one_shot``,
which answers at once instead of sampling for a second) plus one inspect for the restart
count; CPU % is computed against the previous reading, so the first round has none.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fleet.agent.docker_driver import DockerDriver, translated_errors
from fleet.agent.gpus import GpuReadout, read_gpus


@dataclass(frozen=True)
class CpuReading:
    container_ns: int
    system_ns: int
    cpus: int


def cpu_reading(stats: dict[str, Any]) -> CpuReading | None:
    cpu = stats.get("cpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    if total is None or system is None:
        return None
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    return CpuReading(int(total), int(system), int(cpus or 1))


def cpu_percent(current: CpuReading, previous: CpuReading | None) -> float | None:
    """Percent of one core (Docker's convention: 200 means two cores busy)."""
    if previous is None:
        return None
    system = current.system_ns - previous.system_ns
    used = current.container_ns - previous.container_ns
    if system <= 0 or used < 0:
        return None
    return round(used / system * current.cpus * 100.0, 2)


def memory_bytes(stats: dict[str, Any]) -> int | None:
    """Memory in use without the reclaimable page cache (what ``docker stats`` shows)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return max(0, int(usage) - int(cache or 0))


class ContainerStats:
    """Per container: CPU %, memory and restarts, keeping the last CPU reading."""

    def __init__(self, driver: DockerDriver) -> None:
        self.driver = driver
        self.previous: dict[str, CpuReading] = {}

    def read(self, container_id: str) -> dict[str, float]:
        api = self.driver.sdk().api
        with translated_errors("read the container's stats"):
            stats = api.stats(container_id, stream=False, one_shot=True)
            details = api.inspect_container(container_id)
        values: dict[str, float] = {"restarts": float(details.get("RestartCount") or 0)}
        reading = cpu_reading(stats)
        if reading is not None:
            percent = cpu_percent(reading, self.previous.get(container_id))
            self.previous[container_id] = reading
            if percent is not None:
                values["cpu_percent"] = percent
        memory = memory_bytes(stats)
        if memory is not None:
            values["memory_bytes"] = float(memory)
        return values

    def forget_except(self, container_ids: set[str]) -> None:
        for gone in set(self.previous) - container_ids:
            del self.previous[gone]


class HostStats:
    """The node's CPU % (since the previous round), RAM, the data directory's disk, GPUs."""

    def __init__(self, data_dir: Path, gpu_reader: Any = read_gpus) -> None:
        self.data_dir = data_dir
        self.gpu_reader = gpu_reader
        self.previous_times: Any = None

    def _cpu_percent(self) -> float | None:
        times = psutil.cpu_times()
        previous, self.previous_times = self.previous_times, times
        if previous is None:
            return None
        busy = (sum(times) - times.idle - getattr(times, "iowait", 0.0)) - (
            sum(previous) - previous.idle - getattr(previous, "iowait", 0.0)
        )
        total = sum(times) - sum(previous)
        return round(max(0.0, min(100.0, busy / total * 100.0)), 2) if total > 0 else None

    def read(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        probe = self.data_dir
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        disk = shutil.disk_usage(probe)
        values: dict[str, Any] = {
            "cpu_percent": self._cpu_percent(),
            "memory_used_bytes": int(memory.total - memory.available),
            "memory_total_bytes": int(memory.total),
            "disk_used_bytes": int(disk.total - disk.free),
            "disk_total_bytes": int(disk.total),
            "gpus": gpu_values(self.gpu_reader()),
        }
        return {k: v for k, v in values.items() if v is not None}


def gpu_values(readout: GpuReadout) -> list[dict[str, Any]]:
    """Per-GPU series from an NVML readout (used memory includes driver-reserved memory)."""
    out = []
    for gpu in readout.gpus:
        values = {
            "index": gpu["index"],
            "gpu_utilization_percent": gpu["utilization_percent"],
            "gpu_memory_used_bytes": gpu["memory_used_bytes"],
            "gpu_memory_total_bytes": gpu["memory_total_bytes"],
            "gpu_temperature_c": gpu["temperature_c"],
        }
        out.append({k: v for k, v in values.items() if v is not None})
    return out
