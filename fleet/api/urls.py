from django.urls import path
from rest_framework.routers import DefaultRouter

from fleet.api import agent_jobs, views

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
    path(
        "agent/jobs/release/",
        agent_jobs.AgentJobsReleaseView.as_view(),
        name="agent-jobs-release",
    ),
    path(
        "agent/jobs/<int:pk>/claim/", agent_jobs.AgentJobClaimView.as_view(), name="agent-job-claim"
    ),
    path(
        "agent/jobs/<int:pk>/progress/",
        agent_jobs.AgentJobProgressView.as_view(),
        name="agent-job-progress",
    ),
    path(
        "agent/jobs/<int:pk>/finish/",
        agent_jobs.AgentJobFinishView.as_view(),
        name="agent-job-finish",
    ),
]
