"""WebSocket routes; each app adds its consumers here."""

from django.urls import path

from core.consumers import HistoryConsumer

websocket_urlpatterns = [
    path("ws/history/", HistoryConsumer.as_asgi()),
]
