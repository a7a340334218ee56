from django.urls import path
from rest_framework.routers import DefaultRouter

from deployments.api import agent_replicas, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("replicas", views.ReplicaViewSet, basename="replica")
router.register("rollouts", views.RolloutViewSet, basename="rollout")

urlpatterns = [
    path(
        "agent/replicas/<int:pk>/status/",
        agent_replicas.AgentReplicaStatusView.as_view(),
        name="agent-replica-status",
    ),
]
