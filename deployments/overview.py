"""The overview's deployment figures and a newcomer's next steps (core/overview.py)."""

from __future__ import annotations

from collections import Counter

from core.overview import Step, Tile, plural
from deployments import queries
from deployments.choices import DeploymentState
from deployments.models import Deployment
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.models import CatalogModel


def tiles() -> list[Tile]:
    rows = list(queries.deployments(Deployment.objects.filter(deletion_requested_at=None)))
    statuses = Counter(row.status for row in rows)  # type: ignore[attr-defined]
    active = [row for row in rows if row.state == DeploymentState.ACTIVE]
    ready = sum(row.ready_count for row in active)  # type: ignore[attr-defined]
    desired = sum(row.desired_replicas for row in active)
    failed, rolling = statuses["failed"], statuses["progressing"]
    degraded = statuses["degraded"]
    return [
        Tile(
            "replicas",
            "Replicas ready",
            f"{ready} / {desired}",
            "/deployments/?status=degraded" if degraded else "/deployments/",
            f"{plural(degraded, 'deployment')} degraded"
            if degraded
            else "desired, active deployments",
            "warn" if ready < desired else ("ok" if desired else ""),
        ),
        Tile(
            "deployments_failing",
            "Deployments failing",
            str(failed),
            "/deployments/?status=failed",
            "latest rollout failed" if failed else f"of {plural(len(rows), 'deployment')}",
            "bad" if failed else "",
        ),
        Tile(
            "deployments_rolling",
            "Rolling out",
            str(rolling),
            "/deployments/?status=progressing",
            "replicas being placed, started or replaced",
            "warn" if rolling else "",
        ),
    ]


def steps() -> list[Step]:
    models = CatalogModel.objects.count()
    deployments = Deployment.objects.filter(deletion_requested_at=None).exists()
    nodes = list(Node.objects.only("state", "last_heartbeat_at", "inventory"))
    runs_containers = any(
        node.get_status() == NodeState.READY
        and ((node.inventory or {}).get("docker") or {}).get("reachable")
        for node in nodes
    )
    if not nodes:
        where = (
            "No node has joined yet. scripts/run joins this machine as the node 'local' by "
            "itself; for other hosts create a join token under Nodes."
        )
    elif not runs_containers:
        where = (
            "No ready node can run containers: install the Docker engine on the node "
            "(on Debian or Ubuntu: apt-get install docker.io), start it, and the node's "
            "next heartbeat says so. Replicas wait as pending until then."
        )
    else:
        where = ""
    return [
        Step(
            "import",
            "Import a model from Hugging Face into the catalog (its commit is pinned).",
            "/catalog/import/",
            "Import a model",
            done=models > 0,
        ),
        Step(
            "deploy",
            "Deploy one of its variants on your nodes (llama.cpp for a GGUF file).",
            "/deployments/new/",
            "Deploy it",
            done=deployments,
            note=where,
        ),
    ]
