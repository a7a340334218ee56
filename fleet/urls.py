from django.urls import path

from fleet import views

urlpatterns = [path("", views.nodes, name="nodes")]
