"""/api/v1/: every app registers its viewsets on one router."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from benchmarks.api.urls import router as benchmarks_router
from core.api import views as core_views
from core.api.jobs import JobViewSet
from core.api.urls import router as core_router
from deployments.api.urls import router as deployments_router
from deployments.api.urls import urlpatterns as deployments_agent_urls
from fleet.api.urls import router as fleet_router
from fleet.api.urls import urlpatterns as fleet_agent_urls
from gateway.api.urls import router as gateway_router
from gateway.api.urls import urlpatterns as gateway_urls
from models_catalog.api import downloads as download_views
from models_catalog.api.urls import router as catalog_router
from models_catalog.api.urls import urlpatterns as catalog_urls
from monitoring.api.urls import urlpatterns as monitoring_urls

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.registry.extend(core_router.registry)
router.registry.extend(fleet_router.registry)
router.registry.extend(catalog_router.registry)
router.registry.extend(deployments_router.registry)
router.registry.extend(gateway_router.registry)
router.registry.extend(benchmarks_router.registry)
router.register("jobs", JobViewSet, basename="job")
router.register("node-models", download_views.NodeModelViewSet, basename="nodemodel")

urlpatterns = [
    path("me/", core_views.MeView.as_view(), name="me"),
    *fleet_agent_urls,
    *deployments_agent_urls,
    *catalog_urls,
    *gateway_urls,
    *monitoring_urls,
    path("downloads/", download_views.DownloadsView.as_view(), name="downloads"),
    path("downloads/cache/", download_views.CacheView.as_view(), name="downloads-cache"),
    path("", include(router.urls)),
]
