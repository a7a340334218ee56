from rest_framework.routers import DefaultRouter

from core.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("users", views.UserViewSet, basename="user")
router.register("tokens", views.ApiTokenViewSet, basename="apitoken")
router.register("secrets", views.SecretViewSet, basename="secret")
router.register("history", views.HistoryEventViewSet, basename="historyevent")
