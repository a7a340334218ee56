from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "benchmarks"
    verbose_name = "Benchmarks and test suites"

    def ready(self) -> None:
        from benchmarks import catalog_figures, gate_runner
        from core.history import register_target_url
        from deployments import gates
        from models_catalog import serving_figures

        register_target_url("benchmarks.benchmarkprofile", "benchmarks-profile")
        register_target_url("benchmarks.testsuite", "benchmarks-suite")
        gates.register(gate_runner.GateRunner())
        serving_figures.register(catalog_figures.read)
