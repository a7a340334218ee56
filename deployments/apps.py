from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from core.history import register_target_url

        register_target_url("deployments.deployment", "deployments-detail")
