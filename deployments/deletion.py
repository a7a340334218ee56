"""Deleting a deployment's row, once no replica of it is left: the use case
(:func:`deployments.services.delete_deployment`) and the reconcile pass that removed the last
container both end here."""

from __future__ import annotations

from core.history import ChangeContext, diff, record
from deployments.models import Deployment
from deployments.spec import current_spec, flatten_spec


def delete_now(ctx: ChangeContext, deployment: Deployment) -> None:
    """Delete the row (the caller holds its lock and knows no replica is left)."""
    record(
        ctx,
        "deleted",
        deployment,
        changes=diff(flatten_spec(current_spec(deployment)), {}),
    )
    deployment.delete()
