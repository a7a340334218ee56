"""The routing table a gateway keeps in memory: keys, model names, replica endpoints.

Loaded from the database in one go (three queries) by :func:`load_table`, on a worker
thread, every FLEET_GATEWAY_REFRESH_MS and at once when keys or aliases change; requests
only read the current snapshot, so the proxy path never touches the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from django.db import close_old_connections

from deployments.autoscaling import is_autoscaled, policy_of
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Deployment, Replica

# Replicas a gateway sends requests to: answering health (healthy) or proven (available).
ROUTABLE = (ReplicaState.HEALTHY, ReplicaState.AVAILABLE)


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    all_models: bool
    allowed_models: frozenset[str]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    expires_at: float | None  # epoch seconds

    def may_use(self, model: str) -> bool:
        return self.all_models or model in self.allowed_models

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Endpoint:
    replica_id: int
    url: str  # http://host:port
    health_path: str
    host: str = ""
    port: int = 0


@dataclass(frozen=True)
class Route:
    """A model name's targets: (deployment name, weight); one target for a deployment."""

    name: str
    targets: tuple[tuple[str, int], ...]
    is_alias: bool


@dataclass(frozen=True)
class ColdStart:
    """How an autoscaled deployment's requests wait for a replica (its policy's limits)."""

    queue: int
    timeout_s: float


@dataclass
class RoutingTable:
    keys: dict[str, KeyInfo] = field(default_factory=dict)  # sha256 hex -> key
    routes: dict[str, Route] = field(default_factory=dict)  # model name -> route
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)  # deployment
    created: dict[str, int] = field(default_factory=dict)  # model name -> epoch seconds
    # Autoscaled deployments: requests find them at zero and wait (gateway/activator.py).
    cold_start: dict[str, ColdStart] = field(default_factory=dict)
    loaded_at: float = 0.0


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def load_table() -> RoutingTable:
    """A fresh snapshot from the database (call it off the event loop)."""
    from gateway.models import AccessKey, Alias

    close_old_connections()
    try:
        table = RoutingTable(loaded_at=time.monotonic())
        for key in AccessKey.objects.usable().only(
            "id",
            "name",
            "key_hash",
            "all_models",
            "allowed_models",
            "requests_per_minute",
            "tokens_per_minute",
            "expires_at",
        ):
            table.keys[key.key_hash] = KeyInfo(
                id=key.pk,
                name=key.name,
                all_models=key.all_models,
                allowed_models=frozenset(key.allowed_models or []),
                requests_per_minute=key.requests_per_minute,
                tokens_per_minute=key.tokens_per_minute,
                expires_at=_epoch(key.expires_at),
            )
        deployments = Deployment.objects.filter(deletion_requested_at__isnull=True).exclude(
            state=DeploymentState.STOPPED
        )
        for deployment in deployments.select_related("current_revision").only(
            "id", "name", "created_at", "current_revision__spec"
        ):
            table.routes[deployment.name] = Route(
                deployment.name, ((deployment.name, 1),), is_alias=False
            )
            if is_autoscaled(deployment.spec):
                policy = policy_of(deployment.spec)
                table.cold_start[deployment.name] = ColdStart(
                    policy.cold_start_queue, float(policy.cold_start_timeout_seconds)
                )
            table.created[deployment.name] = int(deployment.created_at.timestamp())
            table.endpoints[deployment.name] = ()
        replicas = (
            Replica.objects.filter(
                deployment__name__in=list(table.endpoints),
                state__in=ROUTABLE,
                node__isnull=False,
                host_port__isnull=False,
            )
            .select_related("node", "deployment", "revision")
            .order_by("deployment_id", "slot", "id")
        )
        grouped: dict[str, list[Endpoint]] = {}
        for replica in replicas:
            url = replica.endpoint
            if not url:
                continue
            spec = replica.revision.spec or {}
            health = str((spec.get("runtime_args") or {}).get("health_path") or "/health")
            address = urlsplit(url)
            grouped.setdefault(replica.deployment.name, []).append(
                Endpoint(replica.pk, url, health, address.hostname or "", address.port or 80)
            )
        for name, endpoints in grouped.items():
            table.endpoints[name] = tuple(endpoints)
        for alias in Alias.objects.prefetch_related("targets__deployment"):
            targets = tuple(
                (t.deployment.name, t.weight)
                for t in alias.targets.all()
                if t.deployment.name in table.endpoints
            )
            table.routes[alias.name] = Route(alias.name, targets, is_alias=True)
            table.created[alias.name] = int(alias.created_at.timestamp())
        return table
    finally:
        close_old_connections()
