"""New replicas for a reconcile pass: placement, files on the node, and the container spec.

A new replica row is created first (it names the container and owns the port); placement
(:mod:`deployments.placement`) picks the node, or records why none fits (the replica stays
pending and is placed again on a later pass). When the node lacks the variant's files a
download job runs first (:func:`models_catalog.downloads.put_variant_on_nodes`) and the
replica waits in ``downloading``; the job's progress is visible on the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings

from core.errors import ServiceError
from deployments import placement
from deployments.choices import ReplicaState
from deployments.models import DeploymentRevision, Replica
from deployments.runtimes import get_adapter
from deployments.runtimes.base import LABEL_REPLICA, ReplicaContext, container_name
from fleet.models import Node

if TYPE_CHECKING:
    from deployments.reconciler import Pass


def create_replica(p: Pass, revision: DeploymentRevision, slot: int) -> Replica:
    replica = Replica.objects.create(
        deployment=p.deployment, revision=revision, slot=slot, created_at=p.now
    )
    replica.revision = revision
    p.add(replica)
    place_and_start(p, replica)
    return replica


def _host_of(node: Node) -> str:
    return str(((node.inventory or {}).get("host") or {}).get("hostname") or f"node-{node.pk}")


def place_and_start(p: Pass, replica: Replica) -> None:
    """Choose a node (or record why none fits), then download or start."""
    revision = replica.revision
    nodes = list(Node.objects.all())
    existing = _placed_replicas(p, exclude=replica.pk)
    try:
        demand = placement.demand_for(
            revision.spec, revision.variant, deployment_id=p.deployment.pk
        )
    except (ServiceError, ValueError, KeyError) as exc:
        p.set_state(replica, ReplicaState.PENDING, f"cannot place: {exc}")
        return
    holders = placement.holders_of([revision.variant_id])
    (decision,) = placement.place([demand], nodes, existing, holders=holders)
    if not decision.placed:
        p.set_state(replica, ReplicaState.PENDING, decision.reason or "no node fits")
        return
    placement.assign(replica, decision)
    assert replica.node is not None
    _avoid_host_port_clash(replica, existing, nodes)
    replica.container_name = container_name(_context(replica, port=replica.host_port or 0))
    p.changed[replica.pk] = replica
    _files_then_start(p, replica, present=replica.node_id in holders.get(revision.variant_id, ()))


def _placed_replicas(p: Pass, *, exclude: int) -> list[Replica]:
    """Replicas on nodes, as this pass sees them: the rows, overlaid with the pass's own
    unsaved changes (a replica placed earlier in this pass counts against the next)."""
    rows = {
        r.pk: r
        for r in Replica.objects.filter(node__isnull=False).exclude(
            state__in=[ReplicaState.GONE, ReplicaState.FAILED]
        )
    }
    for changed in p.changed.values():
        rows[changed.pk] = changed
    return [
        r
        for pk, r in rows.items()
        if pk != exclude
        and r.node_id is not None
        and r.state not in (ReplicaState.GONE, ReplicaState.FAILED)
    ]


def _avoid_host_port_clash(replica: Replica, existing: list[Replica], nodes: list[Node]) -> None:
    """Nodes sharing one host (several agents on a machine) share its ports (host network)."""
    if replica.node is None or replica.host_port is None:
        return
    host = _host_of(replica.node)
    same_host = [n for n in nodes if _host_of(n) == host]
    ids = {n.pk for n in same_host}
    used = {r.host_port for r in existing if r.node_id in ids and r.host_port}
    used |= _ports_of_reported_containers(same_host, exclude=replica.pk)
    if replica.host_port in used and replica.revision.spec.get("port") is None:
        port = placement.allocate_port(replica.node, used)
        if port is not None:
            replica.host_port = port


def _ports_of_reported_containers(nodes: list[Node], *, exclude: int | None) -> set[int]:
    """Ports held by containers the nodes last reported, whatever their replica's row says.

    A node that went unreachable keeps running its containers; its replicas are GONE here,
    but their ports stay taken on that host until the node returns and the stale containers
    are removed.
    """
    replica_ids: set[int] = set()
    for node in nodes:
        for container in (node.inventory or {}).get("containers") or []:
            label = (container.get("labels") or {}).get(LABEL_REPLICA, "")
            if str(label).isdigit() and container.get("state") in (
                "running",
                "restarting",
                "created",
            ):
                replica_ids.add(int(label))
    replica_ids.discard(exclude or -1)
    if not replica_ids:
        return set()
    ports = Replica.objects.filter(pk__in=replica_ids, host_port__isnull=False).values_list(
        "host_port", flat=True
    )
    return {port for port in ports if port is not None}


def _files_then_start(p: Pass, replica: Replica, *, present: bool) -> None:
    """Start the replica when its node holds the variant's files (``present``: at the
    catalog's pinned commit, as placement found), else put them there and wait for that."""
    from core.history import ChangeContext
    from models_catalog.downloads import put_variant_on_nodes

    variant = replica.revision.variant
    node = replica.node
    assert node is not None
    if present:
        p.start(replica)
        return
    ctx = ChangeContext.system("reconciler", reason=f"replica {replica.pk} of {p.deployment.name}")
    try:
        (job,) = put_variant_on_nodes(ctx, variant, [node])
    except ServiceError as exc:
        p.set_state(replica, ReplicaState.FAILED, f"cannot download {variant}: {exc.message}")
        return
    replica.download_job = job
    p.set_state(
        replica,
        ReplicaState.DOWNLOADING,
        f"waiting for {variant} to reach {node.name} (download job #{job.pk})",
    )


def image_for(runtime: str, spec: dict[str, Any]) -> str:
    """The spec's image, else the install's image for the runtime, else the adapter's default."""
    image = str(spec.get("image") or (spec.get("runtime_args") or {}).get("image") or "")
    configured = getattr(settings, f"FLEET_IMAGE_{runtime.upper()}", "")
    return image or str(configured or "") or get_adapter(runtime).default_image()


def _context(replica: Replica, *, port: int) -> ReplicaContext:
    revision = replica.revision
    spec = dict(revision.spec)
    return ReplicaContext(
        deployment=replica.deployment.name,
        deployment_id=replica.deployment_id,
        revision=revision.number,
        slot=replica.slot,
        replica_id=replica.pk,
        node_id=replica.node_id or 0,
        host=replica.node.replica_bind_address if replica.node else "127.0.0.1",
        port=port,
        model=placement.model_info(revision.variant, replica.deployment.name),
        runtime_args=dict(spec.get("runtime_args") or {}),
        resources=dict(spec.get("resources") or {}),
        env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
        image=image_for(revision.runtime, spec),
    )


def container_spec(replica: Replica) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON container spec the agent runs, and where its model files are."""
    ctx = _context(replica, port=replica.host_port or 0)
    spec = get_adapter(replica.revision.runtime).container_spec(ctx).to_json()
    model = {"repo_id": ctx.model.repo_id, "commit": ctx.model.commit_sha}
    return spec, model
