"""Celery tasks of the benchmarks app (control queue). Thin: load by id, call the runner."""

from __future__ import annotations

from celery import shared_task

from benchmarks import execute


@shared_task(name="benchmarks.tasks.run_benchmark", ignore_result=True)
def run_benchmark(job_id: int) -> None:
    """Run a ``benchmark`` job (its BenchmarkRun row says what to measure)."""
    execute.run_benchmark(job_id)


@shared_task(name="benchmarks.tasks.run_suite", ignore_result=True)
def run_suite(job_id: int) -> None:
    """Run a ``test_suite`` job (its SuiteRun row holds the cases)."""
    execute.run_suite(job_id)
