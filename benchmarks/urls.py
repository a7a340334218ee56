from django.urls import path

from benchmarks import views

urlpatterns = [
    path("", views.index, name="benchmarks"),
    path("runs/<int:pk>/", views.run_detail, name="benchmarks-run"),
    path("runs/<int:pk>/body/", views.run_body, name="benchmarks-run-body"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="benchmarks-run-cancel"),
    path("compare/", views.compare, name="benchmarks-compare"),
    path("suite-runs/<int:pk>/", views.suite_run_detail, name="benchmarks-suite-run"),
    path("suite-runs/<int:pk>/body/", views.suite_run_body, name="benchmarks-suite-run-body"),
    path("profiles/new/", views.profile_new, name="benchmarks-profile-new"),
    path("profiles/<int:pk>/", views.profile_detail, name="benchmarks-profile"),
    path("profiles/<int:pk>/delete/", views.profile_delete, name="benchmarks-profile-delete"),
    path("suites/new/", views.suite_new, name="benchmarks-suite-new"),
    path("suites/<int:pk>/", views.suite_detail, name="benchmarks-suite"),
    path("suites/<int:pk>/delete/", views.suite_delete, name="benchmarks-suite-delete"),
]
