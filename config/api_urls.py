"""/api/v1/: every app registers its viewsets on one router."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from core.api import views as core_views
from core.api.urls import router as core_router
from fleet.api.urls import router as fleet_router
from fleet.api.urls import urlpatterns as fleet_agent_urls

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.registry.extend(core_router.registry)
router.registry.extend(fleet_router.registry)

urlpatterns = [
    path("me/", core_views.MeView.as_view(), name="me"),
    *fleet_agent_urls,
    path("", include(router.urls)),
]
