from rest_framework.routers import DefaultRouter

from benchmarks.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("benchmarks/profiles", views.ProfileViewSet, basename="benchmark-profile")
router.register("benchmarks/suites", views.SuiteViewSet, basename="test-suite")
router.register("benchmarks/runs", views.BenchmarkRunViewSet, basename="benchmark-run")
router.register("benchmarks/suite-runs", views.SuiteRunViewSet, basename="suite-run")
