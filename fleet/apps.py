from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet: nodes and agents"

    def ready(self) -> None:
        from core.history import register_target_url

        register_target_url("fleet.node", "nodes-detail")
