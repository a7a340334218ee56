from django.urls import path

from gateway import views

urlpatterns = [
    path("", views.overview, name="gateway"),
    path("live/", views.live_figures, name="gateway-live"),
    path("keys/", views.keys, name="gateway-keys"),
    path("keys/<int:pk>/", views.key_detail, name="gateway-key"),
    path("keys/<int:pk>/revoke/", views.key_revoke, name="gateway-key-revoke-page"),
    path("aliases/", views.aliases, name="gateway-aliases"),
    path("aliases/<int:pk>/", views.alias_detail, name="gateway-alias"),
    path("aliases/<int:pk>/delete/", views.alias_delete, name="gateway-alias-delete"),
    path("usage/", views.usage, name="gateway-usage-page"),
]
