"""New replicas for a reconcile pass: placement, files on the node, then the start.

A new replica row is created first (it names the container and owns the port); placement
(:mod:`deployments.placement`) picks the node, or records why none fits (the replica stays
pending and is placed again on a later pass). When the node lacks the variant's files a
download job runs first (:func:`models_catalog.downloads.put_variant_on_nodes`) and the
replica waits in ``downloading``; the job's progress is visible on the job. The container
spec the agent then runs is :mod:`deployments.replica_specs`.
"""

from __future__ import annotations

from core.errors import ServiceError
from deployments import placement
from deployments.choices import ReplicaState
from deployments.models import DeploymentRevision, Replica
from deployments.reconcile_pass import RESCHEDULED, Pass
from deployments.replica_specs import replica_context
from deployments.runtimes.base import LABEL_REPLICA, container_name
from fleet.choices import NodeState
from fleet.models import Node


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
    _avoid_host_port_clash(replica, existing, nodes, rescheduled=p.replicas)
    replica.container_name = container_name(replica_context(replica, port=replica.host_port or 0))
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


def _avoid_host_port_clash(
    replica: Replica, existing: list[Replica], nodes: list[Node], *, rescheduled: list[Replica]
) -> None:
    """Nodes sharing one host (several agents on a machine) share its ports (host network)."""
    if replica.node is None or replica.host_port is None:
        return
    host = _host_of(replica.node)
    same_host = [n for n in nodes if _host_of(n) == host]
    ids = {n.pk for n in same_host}
    used = {r.host_port for r in existing if r.node_id in ids and r.host_port}
    used |= _ports_of_reported_containers(same_host, exclude=replica.pk)
    used |= _ports_left_on_unreachable(same_host)
    used |= {  # this pass's own reschedules (not saved yet)
        r.host_port
        for r in rescheduled
        if r.node_id in ids and r.host_port and r.reason.endswith(RESCHEDULED)
    }
    if replica.host_port in used and replica.revision.spec.get("port") is None:
        port = placement.allocate_port(replica.node, used)
        if port is not None:
            replica.host_port = port


def _ports_left_on_unreachable(nodes: list[Node]) -> set[int]:
    """Ports of replicas rescheduled away from a node that is still unreachable: their
    containers may run there although the node never reported them (it was lost between
    starting one and its next heartbeat), so their ports stay taken on that host."""
    lost = [n.pk for n in nodes if n.state == NodeState.UNREACHABLE]
    if not lost:
        return set()
    ports = Replica.objects.filter(
        node_id__in=lost,
        state=ReplicaState.GONE,
        reason__endswith=RESCHEDULED,
        host_port__isnull=False,
    ).values_list("host_port", flat=True)
    return {port for port in ports if port is not None}


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
