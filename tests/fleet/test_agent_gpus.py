"""GPU inventory: the parsers on real H200 readouts, and read_gpus() on this GPU-less host."""

from __future__ import annotations

import ctypes.util
import json
from pathlib import Path
from typing import Any

import pynvml
import pytest

from fleet.agent import gpus
from fleet.agent.gpus import (
    GpuReadout,
    cuda_version_from_int,
    gpus_from_nvidia_smi_xml,
    gpus_from_nvml_snapshot,
    read_gpus,
    take_nvml_snapshot,
)

# shared/ sits beside the clone: <parent>/main/tests/fleet/this_file -> <parent>/shared
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
MIB = 1024 * 1024


def _fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"fixture {path} not found: shared/ must sit beside the repository clone")
    return path.read_text(encoding="utf-8")


@pytest.fixture
def nvml_snapshot() -> dict[str, Any]:
    return json.loads(_fixture("nvml-h200.json"))


def _has_nvidia_driver() -> bool:
    return ctypes.util.find_library("nvidia-ml") is not None or Path("/dev/nvidiactl").exists()


def test_nvml_snapshot_of_an_h200(nvml_snapshot: dict[str, Any]) -> None:
    readout = gpus_from_nvml_snapshot(nvml_snapshot)

    assert readout.driver_version == "580.159.04"
    assert readout.cuda_version == "13.0"
    assert readout.error is None
    assert readout.gpus == [
        {
            "index": 0,
            "uuid": "GPU-7faec530-f63c-e1d2-cc62-56a890ff514c",
            "name": "NVIDIA H200",
            "memory_total_bytes": 150754820096,
            # NVML's used includes ~615 MiB the driver reserves on an idle card
            "memory_used_bytes": 644939776,
            "memory_free_bytes": 150109880320,
            "utilization_percent": 0,
            "memory_utilization_percent": 0,
            "temperature_c": 33,
            "power_watts": 98.832,
            "power_limit_watts": 700.0,
            "compute_capability": "9.0",
            "mig_enabled": False,
            "ecc_enabled": True,
            "pci_bus_id": "00000000:00:06.0",
        }
    ]
    assert isinstance(readout.gpus[0]["power_watts"], float)


def test_nvidia_smi_xml_of_the_same_h200() -> None:
    readout = gpus_from_nvidia_smi_xml(_fixture("nvidia-smi-q.xml"))

    assert readout.driver_version == "580.159.04"
    assert readout.cuda_version == "13.0"
    assert readout.error is None
    [gpu] = readout.gpus
    assert gpu["name"] == "NVIDIA H200"
    assert gpu["uuid"] == "GPU-7faec530-f63c-e1d2-cc62-56a890ff514c"
    assert gpu["index"] == 0
    # nvidia-smi rounds to MiB: total matches NVML exactly, free to within one MiB
    assert gpu["memory_total_bytes"] == 150754820096
    assert gpu["memory_free_bytes"] == 143156 * MIB
    assert abs(gpu["memory_free_bytes"] - 150109880320) < MIB
    # used = total - free, reserved memory included, as on the NVML path
    assert gpu["memory_used_bytes"] == 615 * MIB
    assert gpu["utilization_percent"] == 0
    assert gpu["memory_utilization_percent"] == 0
    assert gpu["temperature_c"] == 33
    # a separate sample from the NVML one: average power draw at that moment
    assert gpu["power_watts"] == 93.35
    assert gpu["power_limit_watts"] == 700.0
    assert gpu["compute_capability"] is None  # nvidia-smi -q does not report it
    assert gpu["mig_enabled"] is False
    assert gpu["ecc_enabled"] is True
    assert gpu["pci_bus_id"] == "00000000:00:06.0"


def test_nvml_snapshot_of_a_card_without_optional_features(
    nvml_snapshot: dict[str, Any],
) -> None:
    device = nvml_snapshot["devices"][0]
    device.update(
        utilization=None,
        temperature_c=None,
        power_mw=None,
        power_limit_mw=None,
        mig_mode=None,
        ecc_mode=None,
        compute_capability=[8, 6],
    )
    nvml_snapshot["cuda_driver"] = 12040

    readout = gpus_from_nvml_snapshot(nvml_snapshot)

    [gpu] = readout.gpus
    assert readout.cuda_version == "12.4"
    assert gpu["compute_capability"] == "8.6"
    for key in (
        "utilization_percent",
        "memory_utilization_percent",
        "temperature_c",
        "power_watts",
        "power_limit_watts",
        "mig_enabled",
        "ecc_enabled",
    ):
        assert gpu[key] is None, key


def test_nvml_snapshot_with_mig_enabled(nvml_snapshot: dict[str, Any]) -> None:
    nvml_snapshot["devices"][0]["mig_mode"] = [1, 1]
    nvml_snapshot["devices"][0]["ecc_mode"] = [0, 1]  # ECC turns on at the next reset

    [gpu] = gpus_from_nvml_snapshot(nvml_snapshot).gpus

    assert gpu["mig_enabled"] is True
    assert gpu["ecc_enabled"] is False


@pytest.mark.parametrize(
    ("value", "expected"), [(13000, "13.0"), (12040, "12.4"), (11080, "11.8"), (0, None)]
)
def test_cuda_version_from_nvml_integer(value: int, expected: str | None) -> None:
    assert cuda_version_from_int(value) == expected


def test_unreadable_nvidia_smi_output_is_an_error() -> None:
    readout = gpus_from_nvidia_smi_xml("<nvidia_smi_log><gpu>")

    assert readout.gpus == []
    assert readout.error is not None and readout.error.startswith("nvidia-smi")


@pytest.mark.skipif(_has_nvidia_driver(), reason="this host has an NVIDIA driver")
def test_nvml_reports_a_missing_library_on_this_host() -> None:
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        take_nvml_snapshot()


@pytest.mark.skipif(_has_nvidia_driver(), reason="this host has an NVIDIA driver")
def test_read_gpus_without_a_driver_reports_no_gpus_and_no_error() -> None:
    assert read_gpus() == GpuReadout(driver_version=None, cuda_version=None, gpus=[], error=None)


def _fake_nvidia_smi(directory: Path, script: str) -> None:
    tool = directory / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    tool.chmod(0o755)


def test_read_gpus_reports_other_nvml_failures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def lost_gpu() -> dict[str, Any]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(gpus, "take_nvml_snapshot", lost_gpu)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi to fall back on

    readout = read_gpus()

    assert readout.gpus == []
    assert readout.error == "NVML: GPU is lost"


@pytest.mark.skipif(_has_nvidia_driver(), reason="this host has an NVIDIA driver")
def test_read_gpus_falls_back_to_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fixture("nvidia-smi-q.xml")  # fails clearly when shared/ is missing
    xml_path = FIXTURES / "nvidia-smi-q.xml"
    _fake_nvidia_smi(tmp_path, f'[ "$*" = "-q -x" ] && exec /bin/cat "{xml_path}"; exit 2')
    monkeypatch.setenv("PATH", str(tmp_path))

    readout = read_gpus()

    assert readout.error is None
    assert readout.driver_version == "580.159.04"
    assert [gpu["name"] for gpu in readout.gpus] == ["NVIDIA H200"]


@pytest.mark.skipif(_has_nvidia_driver(), reason="this host has an NVIDIA driver")
def test_read_gpus_ignores_a_failing_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # what nvidia-smi does on a host whose driver is not loaded
    _fake_nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    monkeypatch.setenv("PATH", str(tmp_path))

    assert read_gpus() == GpuReadout()
