from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("agent/metrics/", views.AgentMetricsView.as_view(), name="agent-metrics"),
    path("metrics/", views.MetricsSnapshotView.as_view(), name="metrics-snapshot"),
]
