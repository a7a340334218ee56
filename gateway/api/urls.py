from django.urls import path
from rest_framework.routers import DefaultRouter

from gateway.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("gateway/keys", views.AccessKeyViewSet, basename="gateway-key")
router.register("gateway/aliases", views.AliasViewSet, basename="gateway-alias")
router.register("gateway/usage", views.UsageViewSet, basename="gateway-usage")

urlpatterns = [
    path("gateway/live/", views.LiveView.as_view(), name="gateway-live-api"),
]
