"""Mounted at ``/hub/``: the routes huggingface_hub calls (``endpoint=http://<server>/hub``)."""

from django.urls import path

from models_catalog.mirror import views

REPO = "<str:org>/<str:name>"

urlpatterns = [
    path(f"api/models/{REPO}", views.model_info, name="hub-model-info"),
    path(
        f"api/models/{REPO}/revision/<path:revision>",
        views.model_info,
        name="hub-model-info-revision",
    ),
    path(f"api/models/{REPO}/tree/<path:rest>", views.tree, name="hub-tree"),
    path(f"api/models/{REPO}/paths-info/<path:revision>", views.paths_info, name="hub-paths-info"),
    path(f"api/models/{REPO}/refs", views.refs, name="hub-refs"),
    path(f"api/models/{REPO}/commits/<path:revision>", views.commits, name="hub-commits"),
    path(f"{REPO}/resolve/<path:rest>", views.resolve, name="hub-resolve"),
    path("<path:rest>", views.not_found, name="hub-not-found"),
]
