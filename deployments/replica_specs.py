"""The container spec of a replica: what the agent runs, and where its model files are.

The runtime adapter (:mod:`deployments.runtimes`) turns the revision's spec, the node and
the variant into a container spec; :func:`container_spec` is what a start order carries.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from deployments import placement
from deployments.models import Replica
from deployments.runtimes import get_adapter
from deployments.runtimes.base import ReplicaContext


def image_for(runtime: str, spec: dict[str, Any]) -> str:
    """The spec's image, else the install's image for the runtime, else the adapter's default."""
    image = str(spec.get("image") or (spec.get("runtime_args") or {}).get("image") or "")
    configured = getattr(settings, f"FLEET_IMAGE_{runtime.upper()}", "")
    return image or str(configured or "") or get_adapter(runtime).default_image()


def replica_context(replica: Replica, *, port: int) -> ReplicaContext:
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
    ctx = replica_context(replica, port=replica.host_port or 0)
    spec = get_adapter(replica.revision.runtime).container_spec(ctx).to_json()
    model = {"repo_id": ctx.model.repo_id, "commit": ctx.model.commit_sha}
    return spec, model
