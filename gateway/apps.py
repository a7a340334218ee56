from django.apps import AppConfig


class GatewayConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gateway"
    verbose_name = "OpenAI-compatible gateway"

    def ready(self) -> None:
        from core import overview as core_overview
        from core.history import register_target_url
        from gateway import overview

        register_target_url("gateway.accesskey", "gateway-key")
        register_target_url("gateway.alias", "gateway-alias")

        core_overview.register_tiles(50, "gateway", overview.tiles)
        core_overview.register_steps(20, "gateway", overview.steps)

        from gateway import signals

        signals.connect()
