from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "benchmarks"
    verbose_name = "Benchmarks and test suites"

    def ready(self) -> None:
        from benchmarks import gate_runner
        from core.history import register_target_url
        from deployments import gates

        register_target_url("benchmarks.benchmarkprofile", "benchmarks-profile")
        register_target_url("benchmarks.testsuite", "benchmarks-suite")
        gates.register(gate_runner.GateRunner())
