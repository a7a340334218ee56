"""Prometheus HTTP service discovery: every running replica's metrics endpoint.

The answer is the JSON list Prometheus' ``http_sd_configs`` reads: one target group per
replica, ``targets`` = ``["address:port"]``, and labels ``deployment``, ``revision``,
``node``, ``runtime``, ``model`` (the catalog repository), ``variant``, ``replica``,
``slot``, plus ``__metrics_path__`` from the runtime adapter (llama.cpp and vLLM:
``/metrics``; a custom image: its ``metrics_path`` argument). Replicas whose runtime exposes
no metrics (Ollama, a custom image without ``metrics_path``) are left out. The address is the
one the control plane reaches the node's replicas at (``inventory.host.address``, as "try it"
uses).
"""

from __future__ import annotations

from typing import Any

from django.db.models import F

from deployments.models import Replica
from deployments.rollouts import RUNNING
from deployments.runtimes import UnknownRuntimeError, get_adapter


def targets() -> list[dict[str, Any]]:
    rows = (
        Replica.objects.filter(state__in=RUNNING, node__isnull=False, host_port__isnull=False)
        .order_by("deployment__name", "slot", "pk")
        .values(
            "pk",
            "slot",
            "host_port",
            "deployment__name",
            "revision__number",
            "revision__runtime",
            "revision__variant__name",
            "revision__variant__model__repo_id",
            "node__name",
            args=F("revision__spec__runtime_args"),
            host=F("node__inventory__host"),
        )
    )
    groups: list[dict[str, Any]] = []
    for row in rows:
        try:
            adapter = get_adapter(row["revision__runtime"])
        except UnknownRuntimeError:
            continue
        args = row["args"] if isinstance(row["args"], dict) else {}
        path = adapter.metrics_path_for(args)
        if not path:
            continue
        groups.append(
            {
                "targets": [f"{address(row['host'])}:{row['host_port']}"],
                "labels": {
                    "__metrics_path__": path,
                    "deployment": row["deployment__name"],
                    "revision": str(row["revision__number"]),
                    "node": row["node__name"],
                    "runtime": row["revision__runtime"],
                    "model": row["revision__variant__model__repo_id"] or "",
                    "variant": row["revision__variant__name"] or "",
                    "replica": str(row["pk"]),
                    "slot": str(row["slot"]),
                },
            }
        )
    return groups


def address(host: Any) -> str:
    """The node's address for its replicas, as :func:`deployments.try_it.node_address`
    reads it from ``inventory.host.address`` (127.0.0.1 when the agent did not say)."""
    value = host.get("address") if isinstance(host, dict) else None
    return str(value) if value else "127.0.0.1"
