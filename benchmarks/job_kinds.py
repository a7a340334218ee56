"""Job kinds of the benchmarks app (found by ``core.job_services`` by module name)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core import job_services
from core.jobs import Job, JobKind


class _ControlKind(job_services.JobKindHandler):
    task = ""

    def dispatch(self, job: Job) -> None:
        from config.celery import app

        app.send_task(
            self.task,
            args=[job.pk],
            queue=settings.CELERY_TASK_DEFAULT_QUEUE,
            expires=timezone.now() + timedelta(seconds=self.message_expires()),
        )


class BenchmarkKind(_ControlKind):
    kind = JobKind.BENCHMARK
    task = "benchmarks.tasks.run_benchmark"


class TestSuiteKind(_ControlKind):
    __test__ = False  # not a pytest class
    kind = JobKind.TEST_SUITE
    task = "benchmarks.tasks.run_suite"


job_services.register_kind(BenchmarkKind())
job_services.register_kind(TestSuiteKind())
