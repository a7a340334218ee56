from django.urls import path

from fleet import views

urlpatterns = [
    path("", views.nodes, name="nodes"),
    path("join-tokens/", views.join_tokens, name="nodes-join-tokens"),
    path("join-tokens/<int:pk>/revoke/", views.join_token_revoke, name="nodes-join-token-revoke"),
    path("<int:pk>/", views.node_detail, name="nodes-detail"),
    path("<int:pk>/action/", views.node_action, name="nodes-action"),
]
