from django.apps import AppConfig


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    verbose_name = "Model catalog"

    def ready(self) -> None:
        from core.history import register_target_url

        register_target_url("models_catalog.catalogmodel", "catalog-detail")
