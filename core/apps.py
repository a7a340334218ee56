from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: accounts, tokens, secrets, history"

    def ready(self) -> None:
        from core.history import register_target_url

        register_target_url("core.job", "jobs-detail")
