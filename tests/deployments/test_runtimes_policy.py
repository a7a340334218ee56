"""The hardening policy: every adapter's output passes; hand-made bad specs fail, with reasons."""

from __future__ import annotations

import copy

import pytest
from docker.types import Mount

from deployments.runtimes import ADAPTERS
from deployments.runtimes.policy import ALLOWED_CAPS, hardening_violations
from tests.deployments import GGUF_MODEL, GIB, ONNX_MODEL, SAFETENSORS_MODEL, make_context

RESOURCES = {"cpus": 2, "memory_bytes": 4 * GIB}
CUSTOM_ARGS = {"image": "acme/onnx:1", "command": ["serve", "--port", "{port}"]}


def spec_for(runtime: str, **kwargs):
    model = {"vllm": SAFETENSORS_MODEL, "custom": ONNX_MODEL}.get(runtime, GGUF_MODEL)
    args = CUSTOM_ARGS if runtime == "custom" else {}
    return ADAPTERS[runtime].container_spec(
        make_context(model, args, resources=dict(RESOURCES), **kwargs)
    )


@pytest.mark.parametrize("runtime", sorted(ADAPTERS))
def test_every_adapter_output_passes(runtime):
    spec = spec_for(runtime)
    assert hardening_violations(spec, resources=RESOURCES) == []
    assert hardening_violations(spec.to_json(), resources=RESOURCES) == []


@pytest.mark.parametrize("runtime", sorted(ADAPTERS))
def test_every_adapter_output_passes_on_a_bridge(runtime, settings):
    settings.FLEET_CONTAINER_NETWORK = "bridge"
    assert hardening_violations(spec_for(runtime, host="192.168.1.20")) == []


def test_no_runtime_adds_capabilities():
    assert sorted(ALLOWED_CAPS) == sorted(ADAPTERS)
    assert all(not caps for caps in ALLOWED_CAPS.values())


def bad(**changes):
    data = spec_for("llamacpp").to_json()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"privileged": True}, "runs privileged"),
        ({"cap_drop": ["NET_RAW"]}, "does not drop all capabilities"),
        ({"cap_add": ["SYS_ADMIN"]}, "adds capabilities not allowed for runtime 'llamacpp'"),
        ({"security_opt": []}, "does not set no-new-privileges"),
        ({"security_opt": ["no-new-privileges:false"]}, "turns no-new-privileges off"),
        ({"read_only_rootfs": False}, "root file system is writable"),
        ({"init": False}, "runs without an init process"),
        ({"restart_policy": {"Name": "always"}}, "restart policy is 'always'"),
        ({"pids_limit": 0}, "has no pids limit"),
        ({"mem_limit": None}, "memory limit is None"),
        ({"nano_cpus": 4_000_000_000}, "CPU limit is 4000000000"),
        ({"ipc_mode": "host"}, "shares the host's IPC namespace"),
        ({"pid_mode": "host"}, "shares the host's PID namespace"),
        ({"network_mode": "container:other"}, "joins another container's network"),
        ({"devices": ["/dev/mem:/dev/mem"]}, "maps host devices"),
        (
            {"network_mode": "bridge", "ports": {"8080/tcp": 8080}, "bind_address": ""},
            "publishes a port without an explicit bind address",
        ),
        ({"labels": {}}, "label fleet.managed is missing"),
        (
            {"mounts": [{"source": "model", "target": "/models", "read_only": False}]},
            "model directory is mounted writable at /models",
        ),
        (
            {
                "mounts": [
                    {"source": "model", "target": "/models", "read_only": True},
                    {"source": "/var/run/docker.sock", "target": "/run/docker.sock"},
                ]
            },
            "mounts the Docker socket",
        ),
        (
            {
                "mounts": [
                    {"source": "model", "target": "/models", "read_only": True},
                    {"source": "/srv/data", "target": "/data", "read_only": True},
                ]
            },
            "mounts host path /srv/data at /data",
        ),
        ({"volumes": {"/": {"bind": "/host", "mode": "ro"}}}, "mounts / (/ → /host)"),
        ({"volumes": ["/etc:/host-etc:ro"]}, "mounts /etc"),
    ],
)
def test_hand_made_bad_specs_fail_with_the_reason(changes, problem):
    problems = hardening_violations(bad(**changes), resources=RESOURCES)
    assert any(problem in p for p in problems), problems


def test_labels_missing_one_by_one():
    data = bad()
    del data["labels"]["fleet.replica"]
    data["labels"]["fleet.runtime"] = ""
    assert hardening_violations(data) == [
        "label fleet.replica is missing",
        "label fleet.runtime is missing",
    ]


def test_caps_are_judged_against_the_runtime_named_in_the_labels():
    data = bad(cap_add=["CAP_NET_BIND_SERVICE"])
    data["labels"]["fleet.runtime"] = "custom"
    assert hardening_violations(data) == [
        "adds capabilities not allowed for runtime 'custom': NET_BIND_SERVICE"
    ]


INSPECT_OK = {
    "Config": {
        "Labels": {
            "fleet.managed": "true",
            "fleet.node": "5",
            "fleet.deployment": "tiny-chat",
            "fleet.revision": "3",
            "fleet.slot": "1",
            "fleet.replica": "42",
            "fleet.runtime": "llamacpp",
            "fleet.spec-hash": "abc",
        }
    },
    "HostConfig": {
        "Privileged": False,
        "CapDrop": ["ALL"],
        "CapAdd": None,
        "SecurityOpt": ["no-new-privileges:true"],
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": "rw,size=256m"},
        "PidsLimit": 512,
        "Memory": 4 * GIB,
        "NanoCpus": 2_000_000_000,
        "Init": True,
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "NetworkMode": "host",
        "PortBindings": {},
        "IpcMode": "private",
        "PidMode": "",
        "Devices": [],
    },
    "Mounts": [
        {
            "Type": "bind",
            "Source": "/var/lib/fleet/hub/models--acme--tiny/blobs/0f3a",
            "Destination": "/models/tiny-chat-Q8_0.gguf",
            "RW": False,
        }
    ],
}


def test_docker_inspect_of_a_hardened_container_passes():
    assert hardening_violations(INSPECT_OK, resources=RESOURCES) == []


def test_docker_inspect_of_a_loose_container_fails():
    attrs = copy.deepcopy(INSPECT_OK)
    host = attrs["HostConfig"]
    host.update(
        Privileged=True,
        CapDrop=None,
        SecurityOpt=None,
        ReadonlyRootfs=False,
        PidsLimit=None,
        Init=None,
        RestartPolicy={"Name": "no"},
        NetworkMode="bridge",
        PortBindings={"8080/tcp": [{"HostIp": "", "HostPort": "8080"}]},
    )
    attrs["Mounts"] += [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/d.sock", "RW": True},
        {"Type": "bind", "Source": "/home/me", "Destination": "/models/extra", "RW": True},
    ]
    del attrs["Config"]["Labels"]["fleet.node"]
    assert hardening_violations(attrs) == [
        "runs privileged",
        "does not drop all capabilities (cap_drop must include ALL)",
        "does not set no-new-privileges",
        "root file system is writable (use tmpfs mounts for what it writes)",
        "runs without an init process (init must be true)",
        "restart policy is 'no', not 'on-failure'",
        "mounts the Docker socket (/var/run/docker.sock → /d.sock)",
        "model directory is mounted writable at /models/extra",
        "has no pids limit",
        "publishes a port without an explicit bind address",
        "label fleet.node is missing",
    ]


def test_named_volumes_are_not_host_mounts():
    attrs = copy.deepcopy(INSPECT_OK)
    attrs["Mounts"].append(
        {
            "Type": "volume",
            "Name": "ollama-store",
            "Source": "/var/lib/docker/volumes/ollama-store/_data",
            "Destination": "/root/.ollama",
            "RW": True,
        }
    )
    assert hardening_violations(attrs) == []


def sdk_kwargs(**changes):
    """``containers.run`` keyword arguments as an agent passes them to the Docker SDK."""
    kwargs = {
        "image": "ghcr.io/ggml-org/llama.cpp:server",
        "name": "fleet-tiny-chat-r3-s1-42",
        "labels": dict(INSPECT_OK["Config"]["Labels"]),
        "mounts": [
            Mount("/models/tiny-chat-Q8_0.gguf", "/hub/blobs/0f3a", type="bind", read_only=True)
        ],
        "network_mode": "bridge",
        "ports": {"18080/tcp": ("127.0.0.1", 18080)},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,size=256m"},
        "pids_limit": 512,
        "mem_limit": 4 * GIB,
        "nano_cpus": 2_000_000_000,
        "init": True,
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
    }
    kwargs.update(changes)
    return kwargs


def test_docker_sdk_arguments():
    assert hardening_violations(sdk_kwargs(), resources=RESOURCES) == []
    loose = sdk_kwargs(
        read_only=False,
        ports={"18080/tcp": ("", 18080)},
        mounts=[Mount("/models", "/srv/models", type="bind", read_only=False)],
    )
    assert hardening_violations(loose) == [
        "root file system is writable (use tmpfs mounts for what it writes)",
        "model directory is mounted writable at /models",
        "publishes a port without an explicit bind address",
    ]
