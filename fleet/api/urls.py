from django.urls import path
from rest_framework.routers import DefaultRouter

from fleet.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("nodes", views.NodeViewSet, basename="node")
router.register("node-commands", views.NodeCommandViewSet, basename="nodecommand")
router.register("join-tokens", views.JoinTokenViewSet, basename="jointoken")

urlpatterns = [
    path("agent/join/", views.AgentJoinView.as_view(), name="agent-join"),
    path("agent/heartbeat/", views.AgentHeartbeatView.as_view(), name="agent-heartbeat"),
    path(
        "agent/commands/<int:pk>/result/",
        views.AgentCommandResultView.as_view(),
        name="agent-command-result",
    ),
]
