from django.apps import AppConfig


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    verbose_name = "Model catalog"

    def ready(self) -> None:
        from core import diff_names
        from core.history import register_target_url

        register_target_url("models_catalog.catalogmodel", "catalog-detail")
        diff_names.register("variant", _variant_names)
        diff_names.register("model", _model_names)


def _variant_names(ids: set[int]) -> dict[int, str]:
    from core.diff_names import names_of
    from models_catalog.models import Variant

    return names_of(Variant.objects.select_related("model").filter(pk__in=ids))


def _model_names(ids: set[int]) -> dict[int, str]:
    from core.diff_names import names_of
    from models_catalog.models import CatalogModel

    return names_of(CatalogModel.objects.filter(pk__in=ids))
