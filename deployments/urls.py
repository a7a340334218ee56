from django.urls import path

from deployments import views

urlpatterns = [
    path("", views.deployments, name="deployments"),
    path("new/", views.deployment_create, name="deployments-create"),
    path("<int:pk>/", views.deployment_detail, name="deployments-detail"),
    path("<int:pk>/edit/", views.deployment_edit, name="deployments-edit"),
    path("<int:pk>/action/", views.deployment_action, name="deployments-action"),
    path("<int:pk>/try/", views.deployment_try, name="deployments-try"),
    path("replicas/<int:pk>/logs/", views.replica_logs, name="deployments-replica-logs"),
    path(
        "replicas/<int:pk>/logs/download/",
        views.replica_logs_download,
        name="deployments-replica-logs-download",
    ),
]
