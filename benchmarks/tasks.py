"""Celery tasks of the benchmarks app (control queue). Thin: load by id, call the runner."""

from __future__ import annotations

from celery import shared_task

from benchmarks import bench_job, suite_job


@shared_task(name="benchmarks.tasks.run_benchmark", ignore_result=True)
def run_benchmark(job_id: int) -> None:
    """Run a ``benchmark`` job (its BenchmarkRun row says what to measure)."""
    bench_job.run_benchmark(job_id)


@shared_task(name="benchmarks.tasks.run_suite", ignore_result=True)
def run_suite(job_id: int) -> None:
    """Run a ``test_suite`` job (its SuiteRun row holds the cases)."""
    suite_job.run_suite(job_id)
