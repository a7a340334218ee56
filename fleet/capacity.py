"""The capacity of nodes: free memory (RAM, each GPU) as a node reports it, less reservations.

One model of capacity serves both the scheduler (deployments.placement, "where does this
replica go") and the catalog's fits-on matrix (models_catalog.fits, "which nodes can run this
variant now"), so the two never disagree about how much memory a node has left.

Free memory for one more replica is the node's reported free memory, minus the reservations
of replicas that do not run yet (the report does not show their memory), capped by the
capacity less every reservation there (:func:`free_memory`). Reservations belong to the
deployments app (its replicas), which this layer must not import: it registers the function
that reads a node's reservations here (:func:`register_ledger_source`, from
``DeploymentsConfig.ready()``). Without one, nothing is reserved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleet.models import Node

CPU, GPU = "cpu", "gpu"


def gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def free_memory(reported_free: int, capacity: int | None, not_running: int, reserved: int) -> int:
    """Free memory for one more replica on a node (RAM) or one GPU.

    The node's report already shows what running replicas use, so only replicas that do not
    run yet come off it; and the reservations of every replica there must fit in the
    capacity, so no two placements promise the same bytes.
    """
    free = reported_free - not_running
    if capacity:
        free = min(free, capacity - reserved)
    return free


@dataclass
class Ledger:
    """Reservations on one node: RAM, per GPU, ports and replicas per deployment."""

    cpu_not_running: int = 0
    cpu_reserved: int = 0
    gpu_not_running: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    gpu_reserved: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    ports: set[int] = field(default_factory=set)
    per_deployment: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(
        self,
        device: str,
        nbytes: int,
        gpu_indices: Sequence[int],
        *,
        running: bool,
        port: int | None,
        deployment_id: int | None,
    ) -> None:
        if port:
            self.ports.add(port)
        if deployment_id is not None:
            self.per_deployment[deployment_id] += 1
        if device == CPU:
            self.cpu_reserved += nbytes
            if not running:
                self.cpu_not_running += nbytes
        elif device == GPU and gpu_indices:
            share = math.ceil(nbytes / len(gpu_indices))
            for index in gpu_indices:
                self.gpu_reserved[index] += share
                if not running:
                    self.gpu_not_running[index] += share


# --- What nodes report ----------------------------------------------------------------------
def node_ram(node: Node) -> tuple[int | None, int | None]:
    memory = (node.inventory or {}).get("memory") or {}
    free = memory.get("available_bytes")
    return (None if free is None else int(free)), memory.get("total_bytes")


def node_gpus(node: Node) -> list[tuple[int, int, int | None]]:
    """(index, reported free bytes, total bytes) of each GPU the node reported."""
    return [
        (int(g.get("index", i)), int(g.get("memory_free_bytes") or 0), g.get("memory_total_bytes"))
        for i, g in enumerate((node.inventory or {}).get("gpus") or [])
    ]


def ram_free(node: Node, ledger: Ledger) -> int | None:
    reported, capacity = node_ram(node)
    if reported is None:
        return None
    return free_memory(reported, capacity, ledger.cpu_not_running, ledger.cpu_reserved)


def gpus_free(node: Node, ledger: Ledger) -> list[tuple[int, int, int | None]]:
    """(index, free bytes, total bytes) per GPU."""
    return [
        (
            index,
            free_memory(
                reported,
                capacity,
                ledger.gpu_not_running.get(index, 0),
                ledger.gpu_reserved.get(index, 0),
            ),
            capacity,
        )
        for index, reported, capacity in node_gpus(node)
    ]


# --- Reservations on a node -----------------------------------------------------------------
# The seam: the deployments app (a higher layer) owns the replicas that reserve memory; it
# registers the function reading one node's reservations in its AppConfig.ready().
LedgerSource = Callable[[Node], Ledger]
_ledger_source: LedgerSource | None = None


def register_ledger_source(source: LedgerSource) -> None:
    """Set the function that reads the reservations on a node (one source; set again, replaced)."""
    global _ledger_source
    _ledger_source = source


def node_ledger(node: Node) -> Ledger:
    """The reservations on ``node``, read once per ``node`` instance (one query for every
    context and GPU of a fits-on table); a later request loads its nodes afresh."""
    ledger: Ledger | None = getattr(node, "_placement_ledger", None)
    if ledger is None:
        ledger = _ledger_source(node) if _ledger_source is not None else Ledger()
        node._placement_ledger = ledger  # type: ignore[attr-defined]
    return ledger


def reserved_bytes(node: Node, device: str, gpu_index: int | None = None) -> int:
    """How much of the node's reported free memory (``device`` "cpu" RAM, or one GPU) is
    already promised to replicas: reported free minus :func:`free_memory`.

    The replicas are read once per ``node`` instance (:func:`node_ledger`).
    """
    ledger = node_ledger(node)
    if device == CPU:
        reported, _ = node_ram(node)
        free = ram_free(node, ledger)
        return 0 if reported is None or free is None else reported - free
    for index, reported, _total in node_gpus(node):
        if index == gpu_index:
            free = {i: f for i, f, _ in gpus_free(node, ledger)}[index]
            return reported - free
    return 0
