"""WebSocket routes; each app adds its consumers here."""

from django.urls import path

from core.consumers import HistoryConsumer, JobsConsumer
from deployments.consumers import DeploymentsConsumer
from monitoring.consumers import MetricsConsumer

websocket_urlpatterns = [
    path("ws/history/", HistoryConsumer.as_asgi()),
    path("ws/jobs/", JobsConsumer.as_asgi()),
    path("ws/deployments/", DeploymentsConsumer.as_asgi()),
    path("ws/metrics/", MetricsConsumer.as_asgi()),
]
