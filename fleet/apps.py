from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet: nodes and agents"

    def ready(self) -> None:
        from core import diff_names
        from core import overview as core_overview
        from core.history import register_target_url
        from fleet import overview

        register_target_url("fleet.node", "nodes-detail")
        diff_names.register("node", _node_names)

        core_overview.register_tiles(10, "nodes", overview.tiles)


def _node_names(ids: set[int]) -> dict[int, str]:
    from core.diff_names import names_of
    from fleet.models import Node

    return names_of(Node.objects.filter(pk__in=ids))
