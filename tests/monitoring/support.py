"""Builders for the monitoring tests: real nodes (with credentials), deployments, replicas."""

from __future__ import annotations

import time
from typing import Any

from core.history import ChangeContext
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica
from fleet import services as fleet_services
from fleet.models import Node
from models_catalog.models import Variant
from tests.deployments.builders import deploy, gguf_variant


def joined_node(name: str) -> tuple[Node, str]:
    """A node that joined with a real join token; returns it and its credential."""
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    return fleet_services.join_node(join_key=key, name=name)


def variant() -> Variant:
    return gguf_variant(size=50_000_000)


def deployment(user: Any, name: str, gguf: Variant) -> Deployment:
    return deploy(user, name, gguf)


def replica_on(node: Node, dep: Deployment, slot: int = 0, port: int = 20001) -> Replica:
    dep.refresh_from_db()
    return Replica.objects.create(
        deployment=dep,
        revision=dep.current_revision,
        slot=slot,
        node=node,
        state=ReplicaState.AVAILABLE,
        host_port=port,
    )


def now_ms(offset_s: float = 0.0) -> int:
    return int((time.time() + offset_s) * 1000)


def round_(t_ms: int, *, node: dict[str, Any] | None = None, replicas: Any = ()) -> dict:
    return {
        "t": t_ms,
        "node": node if node is not None else {"cpu_percent": 12.5, "memory_used_bytes": 2**30},
        "replicas": [{"replica": replica_id, "values": values} for replica_id, values in replicas],
    }


def batch(*rounds: dict[str, Any]) -> dict[str, Any]:
    return {"agent_version": "test", "rounds": list(rounds)}
