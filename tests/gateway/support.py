"""Real pieces for the gateway tests: llama-server containers, the web app under uvicorn.

:class:`LlamaReplicas` runs the locally built llama.cpp image with the tiny GGUF on free
ports of 127.0.0.1 (hardened like the fleet runs it) and removes every container by id.
:class:`ServedApp` runs the product's ASGI application (``config.asgi``, the gateway
embedded as in the web process) under uvicorn on a thread, so it reads the test database.
:func:`routed_deployment` writes a deployment whose replicas are those containers, as the
reconciler would once agents reported them available.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import docker
import requests
import uvicorn

from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica
from fleet.choices import NodeState
from fleet.models import Node
from tests.deployments.builders import bare_deployment, gguf_variant, qwen
from tests.fleet.agents import wait_until
from tests.ports import free_port

LABEL = "io.slm-fleet.test"


class LlamaReplicas:
    def __init__(self, image: str, gguf: Path, test: str) -> None:
        self.image = image
        self.gguf = gguf
        self.test = test
        self.client = docker.from_env(timeout=30)
        self.containers: dict[int, str] = {}  # port -> container id

    def start(
        self, name: str, port: int | None = None, *, parallel: int = 2, extra: tuple[str, ...] = ()
    ) -> int:
        port = port or free_port()
        args = ["-m", "/models/model.gguf", "--port", str(port), "--host", "127.0.0.1"]
        args += ["--metrics", "-c", "512", "-t", "1", "--parallel", str(parallel)]
        args += ["--alias", name, *extra]
        container = self.client.containers.run(
            self.image,
            args,
            detach=True,
            network_mode="host",
            init=True,
            cap_drop=["ALL"],
            read_only=True,
            tmpfs={"/tmp": "rw,size=16m"},
            security_opt=["no-new-privileges"],
            user="65534:65534",
            mem_limit="1g",
            volumes={str(self.gguf): {"bind": "/models/model.gguf", "mode": "ro"}},
            labels={LABEL: self.test},
        )
        self.containers[port] = container.id

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, 30, message=lambda: self.logs(port))
        return port

    def logs(self, port: int) -> str:
        with contextlib.suppress(Exception):
            return self.client.containers.get(self.containers[port]).logs(tail=30).decode()
        return "(no logs)"

    def kill(self, port: int) -> None:
        container_id = self.containers.pop(port)
        container = self.client.containers.get(container_id)
        container.remove(force=True)

    def remove_all(self) -> None:
        for container_id in self.containers.values():
            with contextlib.suppress(Exception):
                self.client.containers.get(container_id).remove(force=True)
        self.containers.clear()
        self.client.close()


class ServedApp:
    """``config.asgi:application`` under uvicorn on a thread (its own event loop)."""

    def __init__(self) -> None:
        from config.asgi import application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="gateway-uvicorn", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        from django.db import connection

        try:
            self.server.run()
        finally:
            connection.close()

    def start(self) -> ServedApp:
        self.thread.start()
        wait_until(lambda: self.server.started, 15, message="uvicorn did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def gateway(self) -> Any:
        """This server's Gateway object (for assertions on its pool)."""
        from gateway.runtime import local_gateway

        gateways = list(local_gateway.by_loop.values())
        assert gateways, "no request reached the gateway yet"
        return gateways[-1]


def local_node(name: str) -> Node:
    """A ready node whose address is 127.0.0.1 (where the test's containers listen)."""
    return Node.objects.create(
        name=name,
        state=NodeState.READY,
        last_heartbeat_at=time_now(),
        credential_prefix="slmn_x",
        credential_hash=f"hash-{name}",
        inventory={"host": {"hostname": "127.0.0.1"}, "cpu": {"cores": 2}, "gpus": []},
    )


def time_now() -> Any:
    from django.utils import timezone

    return timezone.now()


def routed_deployment(user: Any, name: str, node: Node, ports: list[int]) -> Deployment:
    """A deployment whose available replicas are the containers on ``ports``."""
    variant = gguf_variant(qwen(f"fleet-test/{name}"))
    deployment = bare_deployment(user, name, variant)  # the replicas are the ones below
    for slot, port in enumerate(ports):
        add_replica(deployment, node, slot, port)
    return deployment


def add_replica(deployment: Deployment, node: Node, slot: int, port: int) -> Replica:
    return Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=slot,
        node=node,
        host_port=port,
        state=ReplicaState.AVAILABLE,
        available_at=time_now(),
    )


def wait(predicate: Any, timeout: float = 10, message: Any = "") -> Any:
    return wait_until(predicate, timeout, message=message)


def retry_after(headers: Any) -> int:
    return int(headers["retry-after"])


def settle(seconds: float) -> None:
    time.sleep(seconds)
