from django.apps import AppConfig


class GatewayConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gateway"
    verbose_name = "OpenAI-compatible gateway"

    def ready(self) -> None:
        from core.history import register_target_url

        register_target_url("gateway.accesskey", "gateway-key")
        register_target_url("gateway.alias", "gateway-alias")
