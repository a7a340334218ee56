from django.urls import path
from rest_framework.routers import DefaultRouter

from models_catalog.api import quantize, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("catalog/models", views.CatalogModelViewSet, basename="catalogmodel")
router.register("catalog/variants", views.VariantViewSet, basename="variant")

urlpatterns = [
    path("catalog/search/", views.CatalogSearchView.as_view(), name="catalog-search-api"),
    path(
        "catalog/licence-policy/",
        views.LicencePolicyView.as_view(),
        name="catalog-licence-policy-api",
    ),
    path("quantize/", quantize.QuantizeView.as_view(), name="quantize"),
    path(
        "quantize/comparison/<int:pk>/",
        quantize.ComparisonView.as_view(),
        name="quantize-comparison",
    ),
    path(
        "agent/jobs/<int:pk>/outputs/<str:sha256>/",
        quantize.AgentOutputView.as_view(),
        name="agent-job-output",
    ),
]
