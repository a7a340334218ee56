"""Who outside the catalog still refers to its variants and models.

The catalog refuses to remove what is in use (a variant's files under a running replica, a
model whose variants deployment revisions keep for rollbacks), but the users are apps above
it (deployments), which the catalog must not import. They register their answers here, in
their ``AppConfig.ready()`` (the seam: an inversion of that dependency); the catalog asks
every registered function and words the refusal itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fleet.models import Node
from models_catalog.models import CatalogModel, Variant

# (node, variant) -> whether something on the node runs the variant's files now
VariantOnNodeUsers = Callable[[Node, Variant], bool]
# model -> names of whatever keeps a reference to the model's variants
ModelUsers = Callable[[CatalogModel], Iterable[str]]

_variant_on_node: list[VariantOnNodeUsers] = []
_model: list[ModelUsers] = []


def register(
    *, variant_on_node: VariantOnNodeUsers | None = None, model: ModelUsers | None = None
) -> None:
    """Add the functions of an app that refers to catalog rows (each once)."""
    if variant_on_node is not None and variant_on_node not in _variant_on_node:
        _variant_on_node.append(variant_on_node)
    if model is not None and model not in _model:
        _model.append(model)


def variant_in_use_on(node: Node, variant: Variant) -> bool:
    """Whether something on ``node`` (a replica that is not gone) serves ``variant``."""
    return any(users(node, variant) for users in _variant_on_node)


def model_used_by(model: CatalogModel) -> list[str]:
    """Names (sorted, each once) of what refers to variants of ``model``."""
    return sorted({name for users in _model for name in users(model)})
