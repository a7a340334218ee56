"""What deployments keep of the catalog: the answers :mod:`models_catalog.references` asks.

Registered in ``DeploymentsConfig.ready()``; the catalog words its refusals itself.
"""

from __future__ import annotations

from deployments.choices import ReplicaState
from deployments.models import DeploymentRevision, Replica
from fleet.models import Node
from models_catalog.models import CatalogModel, Variant


def replicas_serve(node: Node, variant: Variant) -> bool:
    """Whether a replica on ``node`` that is not gone serves ``variant``."""
    return (
        Replica.objects.filter(node=node, revision__variant=variant)
        .exclude(state=ReplicaState.GONE)
        .exists()
    )


def deployments_using(model: CatalogModel) -> set[str]:
    """Names of the deployments with a revision (any: rollbacks keep them) of ``model``."""
    return set(
        DeploymentRevision.objects.filter(variant__model=model).values_list(
            "deployment__name", flat=True
        )
    )
