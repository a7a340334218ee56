"""Finished benchmark runs with real figures (the load generator's own summary of samples)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from benchmarks import loadgen
from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TestSuite
from core.jobs import Job, JobKind, JobState
from deployments.models import Deployment


def figures(concurrency: int, *, latency: float = 0.05, tokens: int = 8) -> dict[str, Any]:
    """One level's figures from six measured samples (times in seconds)."""
    samples = [
        loadgen.Sample(
            started=i * 0.1,
            ended=i * 0.1 + latency,
            ttft=latency / 4,
            gaps=[latency / (2 * tokens)] * (tokens - 1),
            output_tokens=tokens,
            prompt_tokens=16,
            tokens_from="usage",
        )
        for i in range(6)
    ]
    level = loadgen.Level(concurrency=concurrency, requests=6)
    return loadgen.summarize(loadgen.LevelRun(level, samples, 0.0, 1.0))


def _job(kind: str, deployment: Deployment, state: str) -> Job:
    return Job.objects.create(
        kind=kind,
        state=state,
        target_type="deployments.deployment",
        target_id=str(deployment.pk),
        target_name=deployment.name,
        actor_type="user",
        actor_name="test",
        started_at=timezone.now(),
        finished_at=timezone.now() if state != JobState.RUNNING else None,
    )


def benchmark_run(
    deployment: Deployment,
    profile: BenchmarkProfile,
    *,
    state: str = JobState.SUCCEEDED,
    variant: int | None = None,
    node_kind: str = "CPU (2 cores)",
) -> BenchmarkRun:
    target = {
        "label": "replica A",
        "kind": "replica",
        "url": "http://127.0.0.1:1/v1",
        "model": deployment.name,
        "replica": None,
        "revision": 1,
        "node": "n1",
        "node_kind": node_kind,
        "variant": variant,
        "variant_name": "acme/x:Q4_K_M",
        "runtime": "llamacpp",
    }
    return BenchmarkRun.objects.create(
        job=_job(JobKind.BENCHMARK, deployment, state),
        target_kind="replica",
        deployment=deployment,
        deployment_name=deployment.name,
        targets=[target],
        profile=profile,
        profile_name=profile.name,
        profile_spec=profile.spec,
        generator={
            "location": "control worker",
            "host": "h",
            "cores": 2,
            "cpu_percent_mean": 12.0,
            "cpu_percent_max": 20.0,
        },
        results=[{"target": "replica A", "levels": [figures(1), figures(2, latency=0.08)]}],
    )


def suite_run(
    deployment: Deployment, suite: TestSuite, *, state: str = JobState.SUCCEEDED
) -> SuiteRun:
    return SuiteRun.objects.create(
        job=_job(JobKind.TEST_SUITE, deployment, state),
        target_kind="deployment",
        deployment=deployment,
        deployment_name=deployment.name,
        targets=[{"label": "via gateway", "kind": "deployment", "url": "http://x/v1"}],
        suite=suite,
        suite_name=suite.name,
        cases=suite.cases,
        results=[
            {
                "target": "via gateway",
                "passed": 1,
                "failed": 0,
                "pass_rate": 1.0,
                "cases": [
                    {
                        "name": "c",
                        "passed": True,
                        "why": "ok",
                        "answer": "hi",
                        "tokens": 1,
                        "latency_ms": 3.0,
                        "error": "",
                    }
                ],
            }
        ],
    )
