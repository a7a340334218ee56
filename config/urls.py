from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


class ApiDocsView(SpectacularSwaggerView):
    """Swagger UI is a page for people: signed-out visitors are sent to the login page."""

    login_redirect = True


urlpatterns = [
    path("", include("core.urls")),
    path("catalog/", include("models_catalog.urls")),
    path("nodes/", include("fleet.urls")),
    path("deployments/", include("deployments.urls")),
    path("", include("monitoring.urls_prometheus")),  # Prometheus export, alerts
    path("gateway/", include("gateway.urls")),
    path("benchmarks/", include("benchmarks.urls")),
    path("hub/", include("models_catalog.mirror.urls")),
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
]
