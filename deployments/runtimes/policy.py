"""The hardening policy every runtime container follows, and the one builder adapters use.

What the agent always applies, whatever the spec says (a :class:`ContainerSpec` has no field
to turn them off): ``cap_drop=["ALL"]``, ``privileged=False``,
``security_opt=["no-new-privileges"]``, ``init=True`` and ``restart_policy=on-failure``.
What the spec carries and this module checks: the capabilities added back (an allow-list per
runtime, empty for all four today), a read-only root file system (writable places are
tmpfs mounts), the model directory mounted read-only and no other host path (never the
Docker socket), pids/memory/CPU limits, ports published on an explicit address, our labels.

:func:`hardening_violations` reads three shapes: a :class:`ContainerSpec`, its JSON form
(optionally with Docker-style extras such as ``privileged``, ``cap_drop``, ``security_opt``,
``init``, ``restart_policy``, ``volumes``, ``devices``), or the ``attrs`` of a Docker container
(``docker inspect``: ``HostConfig``, ``Config``, ``Mounts``). Tests apply it to every
container the suite starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from deployments.runtimes.base import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SLOT,
    MODEL_MOUNT,
    MODEL_SOURCE,
    ContainerSpec,
    ReplicaContext,
    base_labels,
    container_name,
)

LABEL_RUNTIME = "fleet.runtime"
REQUIRED_LABELS = (
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    LABEL_SLOT,
    LABEL_REPLICA,
    LABEL_RUNTIME,
)

# Capabilities a runtime may add back on top of cap_drop=ALL. None needs any: every server
# listens on an unprivileged port (>= 1024), reads a world-readable model directory and
# writes only to its own tmpfs mounts. Ollama included: its store is a tmpfs owned by the
# container's root user, so no CHOWN/DAC_OVERRIDE is needed.
ALLOWED_CAPS: dict[str, frozenset[str]] = {
    "llamacpp": frozenset(),
    "vllm": frozenset(),
    "ollama": frozenset(),
    "custom": frozenset(),
}

# Runtimes allowed a writable root file system, with the documented reason. Empty: each
# adapter lists the few paths its runtime writes as tmpfs mounts instead.
WRITABLE_ROOTFS: dict[str, str] = {}

DEFAULT_PIDS_LIMIT = 512
RESTART_POLICY = "on-failure"
NETWORK_MODES = ("host", "bridge")

# Host paths a container must never see (a prefix match on the resolved source).
FORBIDDEN_HOST_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/var/lib/docker",
    "/run/containerd",
    "/var/run/containerd",
    "/run/podman",
    "/var/run/crio",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
)


# ---------------------------------------------------------------------------- building


def container_network() -> str:
    """``host`` (the server binds the replica's address) or ``bridge`` (published port)."""
    mode = str(getattr(settings, "FLEET_CONTAINER_NETWORK", "host"))
    if mode not in NETWORK_MODES:
        raise ValueError(f"FLEET_CONTAINER_NETWORK must be one of {NETWORK_MODES}, got {mode!r}")
    return mode


def listen_address(ctx: ReplicaContext) -> str:
    """Where the server inside the container binds: the replica's address on the host
    network; every interface of the container's own namespace on a bridge (the engine then
    publishes the port on the replica's address only)."""
    return ctx.host if container_network() == "host" else "0.0.0.0"  # noqa: S104 - inside its own netns  # nosec B104


def limits(resources: Mapping[str, Any]) -> dict[str, Any]:
    """``nano_cpus``, ``mem_limit``, ``pids_limit`` and ``gpus`` from a deployment's resources."""
    cpus = resources.get("cpus")
    memory = resources.get("memory_bytes")
    pids = resources.get("pids")
    return {
        "nano_cpus": round(float(cpus) * 1e9) if cpus else None,
        "mem_limit": int(memory) if memory else None,
        "pids_limit": int(pids) if pids else DEFAULT_PIDS_LIMIT,
        "gpus": int(resources.get("gpus") or 0),
    }


def model_mount() -> dict[str, Any]:
    """The variant's snapshot folder, read-only, at :data:`MODEL_MOUNT`."""
    return {"source": MODEL_SOURCE, "target": MODEL_MOUNT, "read_only": True}


def hardened_spec(
    ctx: ReplicaContext,
    *,
    runtime: str,
    image: str,
    command: list[str],
    entrypoint: list[str] | None = None,
    environment: Mapping[str, str] | None = None,
    health_path: str = "/health",
    metrics_path: str | None = "/metrics",
    tmpfs: Mapping[str, str] | None = None,
    shm_size: int | None = None,
    gpus: int | None = None,
    user: str | None = None,
    cap_add: list[str] | None = None,
    post_start: list[dict[str, Any]] | None = None,
) -> ContainerSpec:
    """A :class:`ContainerSpec` with the platform's labels, limits, network and model mount.

    ``tmpfs`` defaults to ``/tmp`` only; ``gpus`` to the resources' GPU count; ``cap_add``
    must stay within the runtime's allow-list.
    """
    refused_caps = set(cap_add or ()) - ALLOWED_CAPS.get(runtime, frozenset())
    if refused_caps:
        raise ValueError(f"{runtime} may not add capabilities {sorted(refused_caps)}")
    network = container_network()
    resource_limits = limits(ctx.resources)
    spec = ContainerSpec(
        image=image,
        name=container_name(ctx),
        command=list(command),
        entrypoint=list(entrypoint) if entrypoint is not None else None,
        environment=dict(environment or {}),
        labels={**base_labels(ctx), LABEL_RUNTIME: runtime},
        mounts=[model_mount()],
        network_mode=network,
        ports={} if network == "host" else {f"{ctx.port}/tcp": ctx.port},
        bind_address=ctx.host,
        cap_add=sorted(cap_add or ()),
        read_only_rootfs=runtime not in WRITABLE_ROOTFS,
        shm_size=shm_size,
        nano_cpus=resource_limits["nano_cpus"],
        mem_limit=resource_limits["mem_limit"],
        pids_limit=resource_limits["pids_limit"],
        gpus=resource_limits["gpus"] if gpus is None else gpus,
        user=user,
        health_path=health_path,
        metrics_path=metrics_path,
        post_start=list(post_start or []),
    )
    if tmpfs is not None:
        spec.tmpfs = dict(tmpfs)
    return spec


# ---------------------------------------------------------------------------- checking


@dataclass
class _Mount:
    source: str
    target: str
    read_only: bool
    kind: str = "bind"  # bind | volume | tmpfs | model


@dataclass
class _View:
    """The facts the policy looks at, whatever shape they came in."""

    labels: dict[str, str]
    privileged: bool = False
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges"])
    read_only_rootfs: bool = True
    mounts: list[_Mount] = field(default_factory=list)
    pids_limit: int | None = None
    mem_limit: int | None = None
    nano_cpus: int | None = None
    init: bool = True
    restart_policy: str = RESTART_POLICY
    network_mode: str = "host"
    port_addresses: list[str] = field(default_factory=list)
    ipc_mode: str = ""
    pid_mode: str = ""
    devices: list[str] = field(default_factory=list)
    gpus: int = 0

    @property
    def runtime(self) -> str:
        return self.labels.get(LABEL_RUNTIME, "")


def hardening_violations(
    spec: ContainerSpec | Mapping[str, Any], *, resources: Mapping[str, Any] | None = None
) -> list[str]:
    """What in ``spec`` breaks the hardening policy, one sentence each; empty when it is fine.

    With ``resources`` (the deployment's ``cpus``/``memory_bytes``/``gpus``), the CPU and
    memory limits must match them.
    """
    view = _view(spec)
    problems: list[str] = []
    runtime = view.runtime

    if view.privileged:
        problems.append("runs privileged")
    if not any(cap.upper() in ("ALL", "CAP_ALL") for cap in view.cap_drop):
        problems.append("does not drop all capabilities (cap_drop must include ALL)")
    allowed = ALLOWED_CAPS.get(runtime, frozenset())
    extra = sorted(
        {cap.upper().removeprefix("CAP_") for cap in view.cap_add}
        - {cap.removeprefix("CAP_") for cap in allowed}
    )
    if extra:
        problems.append(
            f"adds capabilities not allowed for runtime '{runtime or 'unknown'}': "
            f"{', '.join(extra)}"
        )
    if not any(opt.replace("=", ":").startswith("no-new-privileges") for opt in view.security_opt):
        problems.append("does not set no-new-privileges")
    elif any(opt.replace("=", ":") == "no-new-privileges:false" for opt in view.security_opt):
        problems.append("turns no-new-privileges off")
    if not view.read_only_rootfs and runtime not in WRITABLE_ROOTFS:
        problems.append("root file system is writable (use tmpfs mounts for what it writes)")
    if not view.init:
        problems.append("runs without an init process (init must be true)")
    if view.restart_policy != RESTART_POLICY:
        problems.append(
            f"restart policy is '{view.restart_policy or 'no'}', not '{RESTART_POLICY}'"
        )

    problems += _mount_problems(view.mounts)

    if not view.pids_limit or view.pids_limit <= 0:
        problems.append("has no pids limit")
    if resources is not None:
        memory = resources.get("memory_bytes")
        if memory and view.mem_limit != int(memory):
            problems.append(f"memory limit is {view.mem_limit}, resources say {int(memory)}")
        cpus = resources.get("cpus")
        if cpus and view.nano_cpus != round(float(cpus) * 1e9):
            problems.append(f"CPU limit is {view.nano_cpus} nano-CPUs, resources say {cpus} CPUs")

    if view.ipc_mode == "host":
        problems.append("shares the host's IPC namespace (use shm_size)")
    if view.pid_mode == "host":
        problems.append("shares the host's PID namespace")
    if view.network_mode.startswith("container:"):
        problems.append("joins another container's network namespace")
    if view.devices:
        problems.append(f"maps host devices: {', '.join(view.devices)}")
    for address in view.port_addresses:
        if not address:
            problems.append("publishes a port without an explicit bind address")

    for label in REQUIRED_LABELS:
        if not view.labels.get(label):
            problems.append(f"label {label} is missing")
    if view.labels.get(LABEL_MANAGED) not in (None, "", "true"):
        problems.append(f"label {LABEL_MANAGED} must be 'true'")
    return problems


def _mount_problems(mounts: list[_Mount]) -> list[str]:
    problems: list[str] = []
    for mount in mounts:
        source = mount.source.rstrip("/") or "/"
        if mount.kind == "bind" and _forbidden(source):
            what = "the Docker socket" if "docker" in source or "containerd" in source else source
            problems.append(f"mounts {what} ({source} → {mount.target})")
            continue
        is_model_target = mount.target == MODEL_MOUNT or mount.target.startswith(MODEL_MOUNT + "/")
        if mount.kind == "model" or (mount.kind == "bind" and is_model_target):
            if not mount.read_only:
                problems.append(f"model directory is mounted writable at {mount.target}")
            continue
        if mount.kind == "bind":
            problems.append(
                f"mounts host path {source} at {mount.target} "
                "(only the model directory may be mounted, read-only)"
            )
    return problems


def _forbidden(source: str) -> bool:
    if source == "/":
        return True
    return any(source == path or source.startswith(path + "/") for path in FORBIDDEN_HOST_PATHS)


def _view(spec: ContainerSpec | Mapping[str, Any]) -> _View:
    if isinstance(spec, ContainerSpec):
        return _view_from_spec(spec.to_json())
    if "HostConfig" in spec:
        return _view_from_inspect(spec)
    return _view_from_spec(spec)


def _view_from_spec(data: Mapping[str, Any]) -> _View:
    mounts: list[_Mount] = []
    for mount in data.get("mounts") or []:
        # Our spec's {source, target, read_only} or the Docker SDK's Mount {Source, Target, …}.
        source = str(mount.get("source") or mount.get("Source") or "")
        kind = str(
            mount.get("type")
            or mount.get("Type")
            or ("model" if source == MODEL_SOURCE else "bind")
        )
        target = str(mount.get("target") or mount.get("Target") or "")
        read_only = bool(mount.get("read_only", mount.get("ReadOnly", False)))
        mounts.append(_Mount(source, target, read_only, kind))
    # Docker SDK style ``volumes={host: {"bind": ..., "mode": ...}}`` or ["host:target:mode"].
    volumes = data.get("volumes") or {}
    if isinstance(volumes, Mapping):
        for source, options in volumes.items():
            options = options or {}
            mounts.append(
                _Mount(
                    str(source),
                    str(options.get("bind", "")),
                    options.get("mode") == "ro",
                    "bind" if str(source).startswith("/") else "volume",
                )
            )
    else:
        mounts += [_mount_from_bind(item) for item in volumes]
    restart = data.get("restart_policy", RESTART_POLICY)
    if isinstance(restart, Mapping):
        restart = restart.get("Name") or restart.get("name") or ""
    ports = data.get("ports") or {}
    return _View(
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        privileged=bool(data.get("privileged", False)),
        cap_drop=list(data.get("cap_drop", ["ALL"]) or []),
        cap_add=list(data.get("cap_add") or []),
        security_opt=list(data.get("security_opt", ["no-new-privileges"]) or []),
        read_only_rootfs=bool(data.get("read_only_rootfs", data.get("read_only", False))),
        mounts=mounts,
        pids_limit=data.get("pids_limit"),
        mem_limit=data.get("mem_limit"),
        nano_cpus=data.get("nano_cpus"),
        init=bool(data.get("init", True)),
        restart_policy=str(restart or ""),
        network_mode=str(data.get("network_mode") or "bridge"),
        port_addresses=[_port_address(value, data.get("bind_address")) for value in ports.values()]
        if data.get("network_mode") != "host"
        else [],
        ipc_mode=str(data.get("ipc_mode") or ""),
        pid_mode=str(data.get("pid_mode") or ""),
        devices=[str(d) for d in data.get("devices") or []],
        gpus=int(data.get("gpus") or 0),
    )


def _port_address(value: Any, bind_address: Any) -> str:
    """A published port's host address: the Docker SDK's ``(address, port)`` or ours."""
    if isinstance(value, list | tuple) and len(value) == 2:
        return str(value[0] or "")
    return str(bind_address or "")


def _mount_from_bind(item: str) -> _Mount:
    parts = str(item).split(":")
    source = parts[0]
    target = parts[1] if len(parts) > 1 else ""
    mode = parts[2] if len(parts) > 2 else "rw"
    return _Mount(
        source, target, "ro" in mode.split(","), "bind" if source.startswith("/") else "volume"
    )


def _view_from_inspect(attrs: Mapping[str, Any]) -> _View:
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    mounts: list[_Mount] = []
    if attrs.get("Mounts") is not None:
        for mount in attrs.get("Mounts") or []:
            mounts.append(
                _Mount(
                    str(mount.get("Source") or mount.get("Name") or ""),
                    str(mount.get("Destination") or ""),
                    not mount.get("RW", True),
                    str(mount.get("Type") or "bind"),
                )
            )
    else:
        mounts += [_mount_from_bind(item) for item in host.get("Binds") or []]
        for mount in host.get("Mounts") or []:
            mounts.append(
                _Mount(
                    str(mount.get("Source") or ""),
                    str(mount.get("Target") or ""),
                    bool(mount.get("ReadOnly")),
                    str(mount.get("Type") or "bind"),
                )
            )
    bindings = host.get("PortBindings") or {}
    addresses = [
        str(binding.get("HostIp") or "")
        for entries in bindings.values()
        for binding in entries or []
    ]
    restart = (host.get("RestartPolicy") or {}).get("Name") or ""
    requests = host.get("DeviceRequests") or []
    return _View(
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        privileged=bool(host.get("Privileged")),
        cap_drop=list(host.get("CapDrop") or []),
        cap_add=list(host.get("CapAdd") or []),
        security_opt=list(host.get("SecurityOpt") or []),
        read_only_rootfs=bool(host.get("ReadonlyRootfs")),
        mounts=mounts,
        pids_limit=host.get("PidsLimit"),
        mem_limit=host.get("Memory") or None,
        nano_cpus=host.get("NanoCpus") or None,
        init=bool(host.get("Init")),
        restart_policy=str(restart),
        network_mode=str(host.get("NetworkMode") or ""),
        port_addresses=addresses,
        ipc_mode=str(host.get("IpcMode") or ""),
        pid_mode=str(host.get("PidMode") or ""),
        devices=[str(d.get("PathOnHost") or d) for d in host.get("Devices") or []],
        gpus=sum(int(r.get("Count") or 0) for r in requests),
    )
