"""/api/v1/: every app registers its viewsets on one router."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from core.api import views as core_views
from core.api.urls import router as core_router

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.registry.extend(core_router.registry)

urlpatterns = [
    path("me/", core_views.MeView.as_view(), name="me"),
    path("", include(router.urls)),
]
