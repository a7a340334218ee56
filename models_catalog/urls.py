from django.urls import path

from models_catalog import views

urlpatterns = [path("", views.catalog, name="catalog")]
