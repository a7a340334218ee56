"""The overview's node figures: nodes by state, free GPU memory (core/overview.py)."""

from __future__ import annotations

from collections import Counter

from django.template.defaultfilters import filesizeformat

from core.overview import Tile, plural
from fleet.choices import NodeState
from fleet.models import Node


def tiles() -> list[Tile]:
    nodes = list(Node.objects.only("state", "last_heartbeat_at", "inventory", "name"))
    status = {node.pk: node.get_status() for node in nodes}  # judged once per node
    states = Counter(status.values())
    ready, unreachable = states[NodeState.READY], states[NodeState.UNREACHABLE]
    hint = ", ".join(
        f"{states[state]} {state}"
        for state in (NodeState.UNREACHABLE, NodeState.PENDING)
        if states[state]
    )
    node_tile = Tile(
        "nodes",
        "Nodes ready",
        f"{ready} / {len(nodes)}",
        "/nodes/?status=unreachable" if unreachable else "/nodes/",
        hint or ("no node has joined yet" if not nodes else "all ready"),
        "bad" if unreachable else ("ok" if nodes else ""),
    )
    total = free = gpus = 0
    for node in nodes:
        if status[node.pk] != NodeState.READY:
            continue
        for gpu in (node.inventory or {}).get("gpus") or []:
            gpus += 1
            total += int(gpu.get("memory_total_bytes") or 0)
            free += int(gpu.get("memory_free_bytes") or 0)
    gpu_tile = Tile(
        "gpu_memory",
        "GPU memory free",
        filesizeformat(free) if gpus else "—",
        "/nodes/?status=ready",
        f"of {filesizeformat(total)} on {plural(gpus, 'GPU')}" if gpus else "no GPU on ready nodes",
    )
    return [node_tile, gpu_tile]
