"""The agent's adapter to NVIDIA GPUs: NVML through ``pynvml`` (from ``nvidia-ml-py``).

Three layers, so that the parsing is tested with real readouts on machines without a GPU:

- ``take_nvml_snapshot()`` makes the live NVML calls and returns a plain dict shaped like
  ``shared/fixtures/nvml-h200.json`` (a recorded readout of an H200);
- ``gpus_from_nvml_snapshot(snapshot)`` turns such a dict into a ``GpuReadout``;
- ``read_gpus()`` ties them together, never raises, and falls back to parsing
  ``nvidia-smi -q -x`` (``gpus_from_nvidia_smi_xml``) when the NVML bindings fail but the
  ``nvidia-smi`` tool is installed.

Memory figures: NVML's ``memory.used`` counts memory the driver reserves for itself
(~645 MB on an idle H200, where ``nvidia-smi`` shows "0 MiB used" and lists the same
amount as "reserved"). ``memory_used_bytes`` here is always ``total - free``, i.e. it
*includes* driver-reserved memory; ``memory_free_bytes`` is what is really available to
new processes and is the figure placement must use.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

MIB = 1024 * 1024
NVIDIA_SMI_TIMEOUT_S = 10.0

# NVML enums (nvml.h): NVML_DEVICE_MIG_ENABLE and NVML_FEATURE_ENABLED are both 1.
_NVML_ENABLED = 1


class GpuInfo(TypedDict):
    """One GPU as the agent reports it. Figures NVML cannot give for a card are None."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    # Includes driver-reserved memory (total - free); see the module docstring.
    memory_used_bytes: int
    # What placement should use: memory a new process can really allocate.
    memory_free_bytes: int
    utilization_percent: int | None
    memory_utilization_percent: int | None
    temperature_c: int | None
    power_watts: float | None
    power_limit_watts: float | None
    compute_capability: str | None
    mig_enabled: bool | None
    ecc_enabled: bool | None
    pci_bus_id: str | None


@dataclass(frozen=True)
class GpuReadout:
    """The GPUs of this host. ``error`` is set when a driver is present but failed."""

    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------- parsers


def cuda_version_from_int(value: int | None) -> str | None:
    """NVML's ``cudaDriverVersion`` integer to "major.minor": 13000 -> "13.0", 12040 -> "12.4"."""
    if not value:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def gpus_from_nvml_snapshot(snapshot: Mapping[str, Any]) -> GpuReadout:
    """Parse the dict made by ``take_nvml_snapshot()`` (or recorded from it) into a readout."""
    gpus = [
        _gpu_from_nvml_device(position, device)
        for position, device in enumerate(snapshot.get("devices") or [])
    ]
    return GpuReadout(
        driver_version=snapshot.get("driver") or None,
        cuda_version=cuda_version_from_int(snapshot.get("cuda_driver")),
        gpus=gpus,
        error=None,
    )


def _gpu_from_nvml_device(position: int, device: Mapping[str, Any]) -> GpuInfo:
    memory = device["memory"]
    total = int(memory["total"])
    free = int(memory["free"])
    utilization = device.get("utilization") or {}
    capability = device.get("compute_capability")
    return GpuInfo(
        index=int(device.get("index", position)),
        uuid=str(device["uuid"]),
        name=str(device["name"]),
        memory_total_bytes=total,
        memory_used_bytes=total - free,
        memory_free_bytes=free,
        utilization_percent=_int_or_none(utilization.get("gpu")),
        memory_utilization_percent=_int_or_none(utilization.get("memory")),
        temperature_c=_int_or_none(device.get("temperature_c")),
        power_watts=_milliwatts_to_watts(device.get("power_mw")),
        power_limit_watts=_milliwatts_to_watts(device.get("power_limit_mw")),
        compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
        mig_enabled=_current_mode_enabled(device.get("mig_mode")),
        ecc_enabled=_current_mode_enabled(device.get("ecc_mode")),
        pci_bus_id=device.get("pci_bus_id") or None,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _milliwatts_to_watts(value: Any) -> float | None:
    return None if value is None else int(value) / 1000


def _current_mode_enabled(mode: Any) -> bool | None:
    """NVML reports MIG and ECC as [current, pending]; the current one is what applies now."""
    if not mode:
        return None
    return int(mode[0]) == _NVML_ENABLED


def gpus_from_nvidia_smi_xml(xml_text: str) -> GpuReadout:
    """Parse ``nvidia-smi -q -x`` output (the fallback when the NVML bindings fail).

    nvidia-smi rounds memory to MiB, so figures differ slightly from NVML's bytes; used is
    computed as total - free like the NVML path (so it includes reserved memory). The XML
    has no compute capability: that field is None here.
    """
    try:
        # Output of a local, trusted tool; ElementTree never fetches the external DTD.
        root = ET.fromstring(xml_text)  # noqa: S314 - nvidia-smi's output  # nosec B314
    except ET.ParseError as exc:
        return GpuReadout(error=f"nvidia-smi: unreadable XML ({exc})")
    gpus: list[GpuInfo] = []
    for position, gpu in enumerate(root.findall("gpu")):
        total = _mib_to_bytes(_number(gpu, "fb_memory_usage/total"))
        free = _mib_to_bytes(_number(gpu, "fb_memory_usage/free"))
        if total is None or free is None:
            return GpuReadout(error="nvidia-smi: no framebuffer memory figures")
        gpus.append(
            GpuInfo(
                index=position,
                uuid=_text(gpu, "uuid") or "",
                name=_text(gpu, "product_name") or "",
                memory_total_bytes=total,
                memory_used_bytes=total - free,
                memory_free_bytes=free,
                utilization_percent=_int_or_none(_number(gpu, "utilization/gpu_util")),
                memory_utilization_percent=_int_or_none(_number(gpu, "utilization/memory_util")),
                temperature_c=_int_or_none(_number(gpu, "temperature/gpu_temp")),
                # NVML's power usage is the 1 s average on Ampere and newer: prefer it.
                power_watts=_first_number(
                    gpu,
                    "gpu_power_readings/average_power_draw",
                    "gpu_power_readings/instant_power_draw",
                    "gpu_power_readings/power_draw",
                    "power_readings/power_draw",
                ),
                power_limit_watts=_first_number(
                    gpu,
                    "gpu_power_readings/current_power_limit",
                    "gpu_power_readings/enforced_power_limit",
                    "power_readings/enforced_power_limit",
                    "power_readings/power_limit",
                ),
                compute_capability=None,
                mig_enabled=_enabled(_text(gpu, "mig_mode/current_mig")),
                ecc_enabled=_enabled(_text(gpu, "ecc_mode/current_ecc")),
                pci_bus_id=_text(gpu, "pci/pci_bus_id") or gpu.get("id"),
            )
        )
    return GpuReadout(
        driver_version=_text(root, "driver_version"),
        cuda_version=_text(root, "cuda_version"),
        gpus=gpus,
        error=None,
    )


def _text(element: ET.Element, path: str) -> str | None:
    """The stripped text at ``path``; None when missing or "N/A"-like."""
    found = element.find(path)
    if found is None or found.text is None:
        return None
    text = found.text.strip()
    if not text or text.strip("[]").lower() in {"n/a", "not supported", "unknown error"}:
        return None
    return text


def _number(element: ET.Element, path: str) -> float | None:
    """A figure such as "33 C", "93.35 W", "143771 MiB" or "0 %"; None when absent."""
    text = _text(element, path)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _first_number(element: ET.Element, *paths: str) -> float | None:
    for path in paths:
        value = _number(element, path)
        if value is not None:
            return value
    return None


def _mib_to_bytes(value: float | None) -> int | None:
    return None if value is None else int(value) * MIB


def _enabled(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.lower() == "enabled"


# --------------------------------------------------------------------------- NVML calls

_nvml_lock = threading.Lock()
_nvml_initialised = False

T = TypeVar("T")


def take_nvml_snapshot() -> dict[str, Any]:
    """Read every GPU through NVML into the plain-dict shape of ``nvml-h200.json``.

    Raises ImportError when nvidia-ml-py is missing and ``pynvml.NVMLError`` (e.g.
    ``NVMLError_LibraryNotFound`` on a host without the driver) when NVML fails. Figures a
    card does not support (temperature on some boards, MIG and ECC on consumer cards, ...)
    are None. NVML stays initialised between calls: ``nvmlInit`` can take seconds on cards
    without persistence mode, while one poll costs microseconds.
    """
    import pynvml

    global _nvml_initialised
    with _nvml_lock:
        if not _nvml_initialised:
            pynvml.nvmlInit()
            _nvml_initialised = True
        try:
            return _snapshot(pynvml)
        except pynvml.NVMLError:
            # A lost GPU or a driver reload needs a fresh initialisation next time.
            _nvml_initialised = False
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            raise


def _snapshot(pynvml: Any) -> dict[str, Any]:
    def optional(call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission):
            return None

    def temperature(handle: Any) -> int:
        if hasattr(pynvml, "nvmlDeviceGetTemperatureV"):
            try:
                return int(pynvml.nvmlDeviceGetTemperatureV(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError_FunctionNotFound:
                pass  # a driver older than the bindings
        return int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))

    devices = []
    count = pynvml.nvmlDeviceGetCount()
    for index in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        # v1 memory info: used = total - free, reserved memory included (see module doc).
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
        pci = optional(pynvml.nvmlDeviceGetPciInfo, handle)
        capability = optional(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
        mig_mode = optional(pynvml.nvmlDeviceGetMigMode, handle)
        ecc_mode = optional(pynvml.nvmlDeviceGetEccMode, handle)
        devices.append(
            {
                "index": index,
                "name": _decode(pynvml.nvmlDeviceGetName(handle)),
                "uuid": _decode(pynvml.nvmlDeviceGetUUID(handle)),
                "pci_bus_id": _decode(pci.busId) if pci is not None else None,
                "memory": {
                    "total": int(memory.total),
                    "used": int(memory.used),
                    "free": int(memory.free),
                },
                "utilization": (
                    {"gpu": int(utilization.gpu), "memory": int(utilization.memory)}
                    if utilization is not None
                    else None
                ),
                "temperature_c": optional(temperature, handle),
                "power_mw": optional(pynvml.nvmlDeviceGetPowerUsage, handle),
                "power_limit_mw": optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle),
                "mig_mode": list(mig_mode) if mig_mode is not None else None,
                "compute_capability": list(capability) if capability is not None else None,
                "ecc_mode": list(ecc_mode) if ecc_mode is not None else None,
            }
        )
    return {
        "driver": _decode(pynvml.nvmlSystemGetDriverVersion()),
        "nvml": _decode(pynvml.nvmlSystemGetNVMLVersion()),
        "cuda_driver": int(pynvml.nvmlSystemGetCudaDriverVersion()),
        "count": count,
        "devices": devices,
    }


def _decode(value: str | bytes) -> str:
    """Old bindings return bytes, new ones str; ctypes char arrays are always bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- entry point


def read_gpus() -> GpuReadout:
    """This host's GPUs; never raises.

    No NVML library, no bindings or no loaded driver means "no GPUs" (no error). Any other
    NVML failure gives no GPUs and a short ``error``. In both cases ``nvidia-smi -q -x`` is
    tried first when the tool is installed.
    """
    try:
        return gpus_from_nvml_snapshot(take_nvml_snapshot())
    except ImportError:
        failure: str | None = None
    except Exception as exc:  # pynvml.NVMLError, but pynvml may be missing entirely
        failure = None if _means_no_driver(exc) else f"NVML: {exc}"
    fallback = _read_with_nvidia_smi()
    if fallback is not None and fallback.error is None:
        return fallback
    return GpuReadout(error=failure)


def _means_no_driver(exc: Exception) -> bool:
    try:
        import pynvml
    except ImportError:  # pragma: no cover - we only get here after importing it
        return False
    return isinstance(exc, pynvml.NVMLError_LibraryNotFound | pynvml.NVMLError_DriverNotLoaded)


def _read_with_nvidia_smi() -> GpuReadout | None:
    """``nvidia-smi -q -x`` parsed, or None when the tool is absent or fails to run."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        completed = subprocess.run(  # noqa: S603 - fixed arguments, resolved executable
            [executable, "-q", "-x"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return gpus_from_nvidia_smi_xml(completed.stdout)
