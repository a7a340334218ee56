from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from core import overview as core_overview
        from core.history import register_target_url
        from deployments import catalog_references, overview, placement
        from fleet import capacity
        from models_catalog import references

        register_target_url("deployments.deployment", "deployments-detail")
        # Seams of the layers below, which must not import deployments: the fleet's capacity
        # counts what this app's replicas reserve, and the catalog refuses to remove what
        # they (or deployment revisions) still use.
        capacity.register_ledger_source(placement.ledger_of)
        references.register(
            variant_on_node=catalog_references.replicas_serve,
            model=catalog_references.deployments_using,
        )

        core_overview.register_tiles(20, "deployments", overview.tiles)
        core_overview.register_steps(10, "deployments", overview.steps)
