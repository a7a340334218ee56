"""Where replicas go: a node choice (with GPUs and a port) or the reason none fits.

:func:`place` is pure apart from one optional query (which nodes hold the variant's files):
it takes what each replica needs (:class:`Demand`), the nodes, and the replicas already
placed, and returns one :class:`Decision` per demand. Rules, in order:

1. the node is ready and neither cordoned, draining nor in maintenance;
2. its labels match every ``key: value`` of the selector;
3. a fixed port is free there (replicas use host networking);
4. the footprint fits: free RAM for CPU runtimes, or free memory on ``gpus`` GPUs (the
   footprint split evenly) for GPU runtimes — free as the node last reported it, minus what
   replicas placed there reserve (:func:`fleet.capacity.free_memory`);
5. among the nodes left, ``spread`` takes the one with the fewest replicas of this
   deployment, ``binpack`` the one with the least free memory that still fits; nodes that
   already hold the variant's files win ties under spread and come first under binpack
   (spread keeps its word: the files alone never stack every replica on one node).

The footprint is the catalog's (models_catalog.footprint) at the context the runtime adapter
will allocate. docs/deployments.md explains the memory accounting.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db.models import prefetch_related_objects

from deployments.choices import PlacementStrategy, ReplicaState
from deployments.models import DeploymentRevision, Replica
from deployments.runtimes import get_adapter
from deployments.runtimes.base import ModelInfo, RuntimeAdapter
from fleet.capacity import CPU, GPU, Ledger, gb, gpus_free, ram_free
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.fits import model_architecture, variant_weights_bytes
from models_catalog.footprint import KV_CACHE_TYPES, RUNTIMES, footprint, runtimes_for
from models_catalog.models import NodeModel, Variant

# The catalog's footprint model per runtime; the custom runtime uses the one of the format.
FOOTPRINT_RUNTIME = {"llamacpp": "llamacpp", "ollama": "ollama", "vllm": "vllm"}
# Replicas whose memory the node's own figures may not show yet (nothing runs, or it is
# still loading): their whole reservation comes off the reported free memory.
NOT_YET_RUNNING = (ReplicaState.PENDING, ReplicaState.DOWNLOADING, ReplicaState.STARTING)


# --- What a replica needs -------------------------------------------------------------------
@dataclass(frozen=True)
class Demand:
    """What one replica of a revision needs from a node."""

    variant_id: int
    device: str  # "cpu": RAM; "gpu": VRAM on ``gpus`` GPUs
    bytes: int  # the footprint it reserves (split evenly over its GPUs)
    context: int
    gpus: int = 0
    selector: Mapping[str, str] = field(default_factory=dict)
    strategy: str = PlacementStrategy.SPREAD
    port: int | None = None  # fixed by the spec; None: one is allocated per node
    deployment_id: int | None = None
    # Runtimes that take a share of each GPU whatever the model needs (vLLM's
    # gpu_memory_utilization): that share is what they reserve, if it is more.
    gpu_fraction: float | None = None

    @property
    def per_gpu_bytes(self) -> int:
        return math.ceil(self.bytes / max(self.gpus, 1))


def model_info(variant: Variant, name: str = "") -> ModelInfo:
    """What an adapter needs to know about ``variant``.

    Kept on the instance: a reconcile pass asks several times for the same variant (demand,
    placement, the container spec), and each answer costs queries (files, architecture).
    """
    info: ModelInfo | None = getattr(variant, "_fleet_model_info", None)
    if info is None:
        prefetch_related_objects([variant], "files")  # the weights' size reads them too
        paths = sorted(f.path for f in variant.files.all())
        ggufs = [p for p in paths if p.endswith(".gguf")]
        info = ModelInfo(
            repo_id=variant.model.repo_id,
            commit_sha=variant.model.commit_sha,
            format=variant.format,
            files=tuple(paths),
            name=variant.model.repo_id.rsplit("/", 1)[-1],
            gguf_file=ggufs[0] if ggufs else None,
            max_context=model_architecture(variant.model).max_context,
        )
        variant._fleet_model_info = info  # type: ignore[attr-defined]
    return replace(info, name=name) if name else info


def _kv_cache_type(adapter: RuntimeAdapter, args: dict[str, Any], allowed: Sequence[str]) -> str:
    reader = getattr(adapter, "kv_cache_type", None)
    kind = reader(args) if callable(reader) else "f16"
    return kind if kind in KV_CACHE_TYPES and kind in allowed else "f16"


def _gpu_fraction(adapter: RuntimeAdapter, args: Mapping[str, Any]) -> float | None:
    """The share of each GPU's memory the runtime takes, when it declares one."""
    schema = getattr(adapter, "schema", None)
    try:
        arg = schema.arg("gpu_memory_utilization") if schema is not None else None
    except KeyError:
        arg = None
    if arg is None:
        return None
    value = args.get(arg.name, arg.default)
    return float(value) if value is not None else None


def gpu_count(
    adapter: RuntimeAdapter, args: Mapping[str, Any], resources: Mapping[str, Any]
) -> int:
    """GPUs one replica uses: a runtime's tensor parallelism, else the resources asked."""
    if not adapter.needs_gpu(dict(args), dict(resources)):
        return 0
    parallel = args.get("tensor_parallel_size")
    return max(int(parallel or resources.get("gpus") or 0), 1)


def demand_for(
    spec: Mapping[str, Any],
    variant: Variant,
    *,
    adapter: RuntimeAdapter | None = None,
    deployment_id: int | None = None,
) -> Demand:
    """The demand of one replica of ``spec`` (normalized) serving ``variant``."""
    adapter = adapter or get_adapter(spec["runtime"])
    args = dict(spec.get("runtime_args") or {})
    resources = dict(spec.get("resources") or {})
    key = FOOTPRINT_RUNTIME.get(spec["runtime"])
    choices = runtimes_for(variant.format)
    runtime = RUNTIMES[key] if key else (choices[0] if choices else RUNTIMES["llamacpp"])
    context = int(adapter.context_length(args, model_info(variant)))
    need = footprint(
        variant_weights_bytes(variant),
        model_architecture(variant.model),
        context,
        _kv_cache_type(adapter, args, runtime.kv_cache_types),
        runtime,
    )
    # Without the facts for the KV cache, weights + overhead is the best lower bound.
    total = (
        need.total_bytes
        if need.total_bytes is not None
        else (need.weights_bytes + need.overhead_bytes)
    )
    gpus = gpu_count(adapter, args, resources)
    placement = spec.get("placement") or {}
    return Demand(
        variant_id=variant.pk,
        device=GPU if gpus else CPU,
        bytes=int(total),
        context=context,
        gpus=gpus,
        selector=dict(placement.get("selector") or {}),
        strategy=placement.get("strategy") or PlacementStrategy.SPREAD,
        port=spec.get("port"),
        deployment_id=deployment_id,
        gpu_fraction=_gpu_fraction(adapter, args) if gpus else None,
    )


def demand_for_revision(revision: DeploymentRevision) -> Demand:
    return demand_for(revision.spec, revision.variant, deployment_id=revision.deployment_id)


# --- Reservations ---------------------------------------------------------------------------
def _ledgers(replicas: Iterable[Replica]) -> dict[int, Ledger]:
    ledgers: dict[int, Ledger] = defaultdict(Ledger)
    for replica in replicas:
        if replica.node_id is None or replica.state == ReplicaState.GONE:
            continue
        ledgers[replica.node_id].add(
            replica.reserved_device,
            int(replica.reserved_bytes or 0),
            [int(i) for i in replica.gpu_indices or []],
            running=replica.state not in NOT_YET_RUNNING,
            port=replica.host_port,
            deployment_id=replica.deployment_id,
        )
    return ledgers


def ledger_of(node: Node) -> Ledger:
    """The reservations of the replicas placed on ``node`` (one query).

    The source of :func:`fleet.capacity.reserved_bytes` (registered in
    ``DeploymentsConfig.ready()``): the catalog's fits-on table counts the same replicas.
    """
    return _ledgers(
        Replica.objects.filter(node=node)
        .exclude(state=ReplicaState.GONE)
        .only(
            "node_id",
            "deployment_id",
            "state",
            "reserved_device",
            "reserved_bytes",
            "gpu_indices",
            "host_port",
        )
    ).get(node.pk, Ledger())


# --- Ports ----------------------------------------------------------------------------------
def allocate_port(
    node: Node, used_ports: Collection[int], port_range: tuple[int, int] | None = None
) -> int | None:
    """The lowest port of FLEET_REPLICA_PORT_RANGE not used on ``node``; None when full."""
    low, high = port_range or settings.FLEET_REPLICA_PORT_RANGE
    used = set(used_ports)
    return next((port for port in range(low, high + 1) if port not in used), None)


# --- Decisions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """Where one replica goes, or why it cannot go anywhere now."""

    node: Node | None
    reason: str = ""
    port: int | None = None
    device: str = ""
    reserved_bytes: int = 0
    gpu_indices: tuple[int, ...] = ()
    holds_files: bool = False

    @property
    def placed(self) -> bool:
        return self.node is not None


def assign(replica: Replica, decision: Decision) -> list[str]:
    """Write ``decision`` onto ``replica``; returns the fields to save."""
    if decision.node is None:
        replica.reason = decision.reason
        return ["reason"]
    replica.node = decision.node
    replica.host_port = decision.port
    replica.reserved_device = decision.device
    replica.reserved_bytes = decision.reserved_bytes
    replica.gpu_indices = list(decision.gpu_indices)
    replica.reason = ""
    return ["node", "host_port", "reserved_device", "reserved_bytes", "gpu_indices", "reason"]


def _why_unschedulable(node: Node) -> str:
    status = node.get_status()
    if status != NodeState.READY:
        return f"{node.name} is {status}"
    flags = ", ".join(node.flags)
    return f"{node.name} is {flags}"


def _names(items: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class _Candidate:
    node: Node
    free: int  # the figure the strategy compares (RAM, or the GPU(s) chosen)
    gpu_indices: tuple[int, ...]
    port: int
    holds_files: bool
    replicas_here: int
    reserve: int


def _gpu_need(demand: Demand, total: int | None) -> int:
    """What one replica reserves on a GPU of ``total`` bytes."""
    if demand.gpu_fraction and total:
        return max(demand.per_gpu_bytes, math.ceil(demand.gpu_fraction * total))
    return demand.per_gpu_bytes


def _fit_gpus(
    gpus: list[tuple[int, int, int | None]], demand: Demand
) -> tuple[tuple[int, ...], int, int] | None:
    """The GPUs to use, the smallest free figure among them and the bytes reserved on them
    together; None when fewer than ``demand.gpus`` GPUs have room."""
    fitting = []
    for index, free, total in gpus:
        need = _gpu_need(demand, total)
        budget_ok = not (demand.gpu_fraction and total) or (
            demand.per_gpu_bytes <= demand.gpu_fraction * total  # type: ignore[operator]
        )
        if free >= need and budget_ok:
            fitting.append((free, index, need))
    if len(fitting) < demand.gpus:
        return None
    # spread: the emptiest GPUs; binpack: the fullest that still fit
    fitting.sort(reverse=demand.strategy != PlacementStrategy.BINPACK)
    chosen = fitting[: demand.gpus]
    return (
        tuple(sorted(index for _, index, _ in chosen)),
        min(free for free, _, _ in chosen),
        sum(need for _, _, need in chosen),
    )


def _place_one(
    demand: Demand, nodes: Sequence[Node], ledgers: dict[int, Ledger], holders: Collection[int]
) -> Decision:
    if not nodes:
        return Decision(None, "no nodes have joined the fleet")
    ready = [n for n in nodes if n.schedulable]
    if not ready:
        return Decision(
            None, "no schedulable node: " + _names([_why_unschedulable(n) for n in nodes])
        )
    matching = [n for n in ready if all(n.labels.get(k) == v for k, v in demand.selector.items())]
    if not matching:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(demand.selector.items()))
        return Decision(None, f"no ready node has the labels {wanted}")
    if demand.port:
        taken = [n.name for n in matching if demand.port in ledgers[n.pk].ports]
        matching = [n for n in matching if demand.port not in ledgers[n.pk].ports]
        if not matching:
            return Decision(None, f"port {demand.port} is taken on {_names(taken)}")

    fits: list[_Candidate] = []
    best: tuple[int, str] | None = None  # the largest free figure seen, for the reason
    misses: dict[str, list[str]] = defaultdict(list)
    for node in matching:
        ledger = ledgers[node.pk]
        gpu_indices: tuple[int, ...] = ()
        reserve = demand.bytes
        if demand.device == CPU:
            ram = ram_free(node, ledger)
            if ram is None:
                misses["no figures"].append(node.name)
                continue
            free, fitted = ram, ram >= demand.bytes
        else:
            gpus = gpus_free(node, ledger)
            if len(gpus) < demand.gpus:
                if gpus:
                    misses["too few GPUs"].append(f"{node.name} has {len(gpus)}")
                continue
            chosen = _fit_gpus(gpus, demand)
            fitted = chosen is not None
            if chosen is not None:
                gpu_indices, free, reserve = chosen
            else:  # the most it could offer on each of the GPUs it needs
                free = sorted((f for _, f, _ in gpus), reverse=True)[demand.gpus - 1]
        if not fitted:
            if best is None or free > best[0]:
                best = (free, node.name)
            continue
        port = demand.port or allocate_port(node, ledger.ports)
        if port is None:
            misses["no port"].append(node.name)
            continue
        fits.append(
            _Candidate(
                node,
                free,
                gpu_indices,
                port,
                node.pk in holders,
                ledger.per_deployment.get(demand.deployment_id or 0, 0),
                reserve,
            )
        )
    if not fits:
        return Decision(None, _no_fit_reason(demand, best, misses))

    if demand.strategy == PlacementStrategy.BINPACK:
        fits.sort(key=lambda c: (not c.holds_files, c.free, c.node.name))
    else:
        fits.sort(key=lambda c: (c.replicas_here, not c.holds_files, -c.free, c.node.name))
    chosen_one = fits[0]
    ledgers[chosen_one.node.pk].add(
        demand.device,
        chosen_one.reserve,
        chosen_one.gpu_indices,
        running=False,
        port=chosen_one.port,
        deployment_id=demand.deployment_id,
    )
    return Decision(
        chosen_one.node,
        port=chosen_one.port,
        device=demand.device,
        reserved_bytes=chosen_one.reserve,
        gpu_indices=chosen_one.gpu_indices,
        holds_files=chosen_one.holds_files,
    )


def _no_fit_reason(
    demand: Demand, best: tuple[int, str] | None, misses: Mapping[str, list[str]]
) -> str:
    if demand.device == CPU:
        need = f"no node with {gb(demand.bytes)} free RAM"
    elif demand.gpus > 1:
        need = f"no node with {gb(demand.per_gpu_bytes)} free VRAM on each of {demand.gpus} GPUs"
    else:
        need = f"no node with {gb(demand.bytes)} free VRAM"
    if demand.gpu_fraction:
        need = (
            f"no node with {demand.gpu_fraction:.0%} of a GPU's memory free "
            f"(at least {gb(demand.per_gpu_bytes)})"
        )
    parts = []
    if best is not None:
        parts.append(f"{best[1]} has {gb(max(best[0], 0))}")
    if misses.get("too few GPUs"):
        parts.append(f"{demand.gpus} GPUs needed, {_names(misses['too few GPUs'])}")
    if misses.get("no figures"):
        parts.append(f"{_names(misses['no figures'])} reported no memory figures yet")
    if misses.get("no port"):
        parts.append(f"no free port left on {_names(misses['no port'])}")
    if not parts:
        return "no ready node that matches has a GPU" if demand.device == GPU else need
    return f"{need}; {'; '.join(parts)}"


def holders_of(variant_ids: Iterable[int]) -> dict[int, set[int]]:
    """Node ids holding each variant's files (present, at the catalog's pinned commit)."""
    held: dict[int, set[int]] = defaultdict(set)
    rows = NodeModel.objects.filter(
        variant_id__in=set(variant_ids), state=NodeModel.State.PRESENT
    ).values_list("variant_id", "node_id", "commit_sha", "variant__model__commit_sha")
    for variant_id, node_id, commit, pinned in rows:
        if commit == pinned:
            held[variant_id].add(node_id)
    return held


def place(
    demands: Sequence[Demand],
    nodes: Iterable[Node],
    existing_replicas: Iterable[Replica],
    *,
    holders: Mapping[int, Collection[int]] | None = None,
) -> list[Decision]:
    """One decision per demand, in order; each placement counts against the next.

    ``existing_replicas``: the replicas already on nodes (any deployment; gone ones are
    ignored). ``holders``: variant id → ids of nodes that hold its files (queried when None).
    """
    node_list = sorted(nodes, key=lambda n: n.name)
    ledgers = _ledgers(existing_replicas)
    if holders is None:
        holders = holders_of(d.variant_id for d in demands)
    return [
        _place_one(demand, node_list, ledgers, holders.get(demand.variant_id, ()))
        for demand in demands
    ]
