"""What a run measures: a deployment through the gateway, or replicas directly.

A target is a plain dict stored on the run (``RunBase.targets``) so a run keeps saying what
it measured after the replica is gone: its label, URL (ending in ``/v1``), the served model
name, and the replica, revision, node, node kind, variant and runtime behind it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from core.errors import ServiceError
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica


def node_kind(node: Any) -> str:
    """What hardware a node is, for comparing like with like: its first GPU, else its CPU."""
    if node is None:
        return ""
    inventory = node.inventory or {}
    gpus = inventory.get("gpus") or []
    if gpus and isinstance(gpus[0], dict) and gpus[0].get("name"):
        return f"{gpus[0]['name']} ×{len(gpus)}"
    cpu = inventory.get("cpu") or {}
    model = str(cpu.get("model") or "CPU")
    cores = cpu.get("logical_cores") or cpu.get("cores")
    return f"{model} ({cores} cores)" if cores else model


def _variant_of(deployment: Deployment, revision: Any) -> tuple[int | None, str]:
    variant = getattr(revision, "variant", None) if revision is not None else None
    if variant is None:
        return None, ""
    return variant.pk, f"{variant.model.repo_id}:{variant.name}"


def for_replica(replica: Replica, *, label: str = "") -> dict[str, Any]:
    if replica.state != ReplicaState.AVAILABLE or not replica.endpoint:
        raise ServiceError(
            f"Replica {replica.pk} of {replica.deployment.name} is {replica.state}, not "
            "available: benchmark an available replica (or the deployment through the gateway).",
            field="replica",
        )
    revision = replica.revision
    variant_id, variant_name = _variant_of(replica.deployment, revision)
    return {
        "label": label or f"r{revision.number} replica {replica.pk} on {replica.node}",
        "kind": "replica",
        "url": replica.endpoint + "/v1",
        "model": replica.deployment.name,
        "replica": replica.pk,
        "revision": revision.number,
        "node": replica.node.name if replica.node else "",
        "node_kind": node_kind(replica.node),
        "variant": variant_id,
        "variant_name": variant_name,
        "runtime": revision.runtime,
    }


def for_deployment(deployment: Deployment, available: list[Replica]) -> dict[str, Any]:
    """The deployment through the gateway (``FLEET_GATEWAY_URL``); ``available``: its
    available replicas (:func:`replicas_of`), for the nodes it runs on."""
    revision = deployment.current_revision
    variant_id, variant_name = _variant_of(deployment, revision)
    nodes = sorted({r.node.name for r in available if r.node is not None})
    first = available[0] if available else None
    return {
        "label": f"{deployment.name} via the gateway",
        "kind": "deployment",
        "url": settings.FLEET_GATEWAY_URL.rstrip("/") + "/v1",
        "model": deployment.name,
        "replica": None,
        "revision": revision.number if revision else None,
        "node": ", ".join(nodes),
        "node_kind": node_kind(first.node) if first else "",
        "variant": variant_id,
        "variant_name": variant_name,
        "runtime": revision.runtime if revision else "",
    }


def replicas_of(deployment: Deployment) -> list[Replica]:
    return list(
        Replica.objects.select_related("node", "revision", "revision__variant__model", "deployment")
        .filter(deployment=deployment, state=ReplicaState.AVAILABLE)
        .order_by("slot", "pk")
    )
