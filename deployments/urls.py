from django.urls import path

from deployments import views

urlpatterns = [path("", views.deployments, name="deployments")]
