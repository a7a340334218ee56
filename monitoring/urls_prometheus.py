"""Routes of the Prometheus export and the console's alerts (included from config/urls.py)."""

from django.urls import path

from monitoring.prometheus import views

urlpatterns = [
    # Where Prometheus looks by default (its scrape configs' metrics_path is /metrics).
    path("metrics", views.PrometheusMetricsView.as_view(), name="metrics"),
    path(
        "api/v1/prometheus/metrics/",
        views.PrometheusMetricsView.as_view(),
        name="prometheus-metrics",
    ),
    path(
        "api/v1/prometheus/targets/",
        views.PrometheusTargetsView.as_view(),
        name="prometheus-targets",
    ),
    path("api/v1/alerts/", views.AlertsView.as_view(), name="alerts-api"),
    path("alerts/", views.alerts_page, name="alerts"),
    path("alerts/list/", views.alerts_list, name="alerts-list"),
    path("alerts/badge/", views.alerts_badge, name="alerts-badge"),
]
