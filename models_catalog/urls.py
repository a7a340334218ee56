from django.urls import path

from models_catalog import views, views_downloads, views_quantize

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("import/", views.catalog_import, name="catalog-import"),
    path("search/", views.catalog_search, name="catalog-search"),
    path("licence-policy/", views.catalog_licence_policy, name="catalog-licence-policy"),
    path("<int:pk>/", views.catalog_detail, name="catalog-detail"),
    path("<int:pk>/resync/", views.catalog_resync, name="catalog-resync"),
    path("<int:pk>/repin/", views.catalog_repin, name="catalog-repin"),
    path("<int:pk>/delete/", views.catalog_delete, name="catalog-delete"),
    path("<int:pk>/quantize/", views_quantize.catalog_quantize, name="catalog-quantize"),
    path(
        "<int:pk>/variants/comparison/",
        views_quantize.catalog_quantize_comparison,
        name="catalog-quantize-comparison",
    ),
    path("variants/<int:pk>/cache/", views_downloads.variant_cache, name="catalog-variant-cache"),
    path(
        "variants/<int:pk>/put-on-nodes/",
        views_downloads.variant_put_on_nodes,
        name="catalog-variant-put",
    ),
]
