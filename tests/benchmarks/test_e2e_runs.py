"""End to end: benchmark and test-suite runs on real llama.cpp replicas of real agents.

A two-replica deployment of the tiny GGUF; the control worker (a real Celery worker on the
real Redis broker) runs the jobs; the gateway is the real ASGI app under uvicorn. The sweep
measures both replicas directly, a second run goes through the gateway with a temporary key,
a suite judges answers, a long run is cancelled, and a replica killed mid-run fails its run
with the replica's reason.
"""

from __future__ import annotations

import uuid

import pytest

from benchmarks import services
from benchmarks.models import BenchmarkRun, SuiteRun
from core.jobs import Job
from deployments import services as deployment_services
from gateway.models import AccessKey
from tests.deployments import e2e
from tests.fleet.agents import wait_until
from tests.gateway.support import ServedApp

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

OUTPUT = 12
REQUESTS = 6


def job_of(run: BenchmarkRun | SuiteRun) -> Job:
    return Job.objects.get(pk=run.job_id)


def finished(run: BenchmarkRun | SuiteRun) -> bool:
    return job_of(run).is_finished


def check_level(level: dict, *, requests: int, stream: bool) -> None:
    assert level["requests"] == requests and level["completed"] == requests, level
    assert level["errors"] == 0, level
    assert level["tokens_from"] == "usage", level  # the runtime's own count
    assert level["output_tokens"] == requests * OUTPUT, level  # ignore_eos: exactly max_tokens
    assert level["prompt_tokens"] > 0
    for figure in ("ttft_ms", "latency_ms"):
        spread = level[figure]
        assert 0 < spread["p50"] <= spread["p90"] <= spread["p99"], (figure, spread)
    if stream:
        assert 0 < level["itl_ms"]["p50"] < level["latency_ms"]["p50"], level
        assert level["ttft_ms"]["p50"] < level["latency_ms"]["p50"]
    assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
    assert level["total_tokens_per_s"] > level["output_tokens_per_s"]
    assert level["generator_cpu_percent"] >= 0
    # a closed loop of N clients keeps about N requests in flight
    target = level["concurrency"]
    assert 0.5 * target <= level["mean_concurrency"] <= target + 0.01, level


def test_benchmarks_and_suites_on_real_replicas(stage: e2e.Stage):
    runner, ctx = stage.runner, stage.ctx
    stage.configure(FLEET_GATEWAY_REFRESH_MS=500)
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    started = [e2e.start(runner, f"bm-{x}-{suffix}") for x in "ab"]
    agents = {node.pk: agent for agent, node in started}
    loop = e2e.DeploymentLoop()
    loop.start()
    served = ServedApp().start()
    stage.settings.FLEET_GATEWAY_URL = served.url
    try:
        name = f"bm-{suffix}"
        deployment = deployment_services.create_deployment(ctx, name, e2e.llamacpp_spec(variant, 2))
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 2), 90, message=why)
        replicas = e2e.available(deployment)

        # a sweep over both replicas, streamed
        sweep = services.create_profile(
            ctx,
            name=f"sweep-{suffix}",
            # completions: the tiny model's chat stream carries control characters only
            spec={
                "levels": [1, 2],
                "requests_per_level": REQUESTS,
                "warmup_requests": 1,
                "prompt_tokens": 16,
                "output_tokens": OUTPUT,
                "api": "completions",
            },
        )
        run = services.start_benchmark(ctx, sweep, replicas=replicas)
        wait_until(lambda: finished(run), 180, message=why)
        job = job_of(run)
        assert job.state == "succeeded", job.error + job.log_tail
        run.refresh_from_db()
        assert [t["replica"] for t in run.targets] == [r.pk for r in replicas]
        assert {t["node"] for t in run.targets} == {r.node.name for r in replicas}
        assert len(run.results) == 2
        for result in run.results:
            assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
            for level in result["levels"]:
                check_level(level, requests=REQUESTS, stream=True)
                assert [u["replica"] for u in level["usage"]["replicas"]]  # monitoring asked
        print("sweep, replica 1, concurrency 2:", run.results[0]["levels"][1])
        assert run.generator["location"] == "control worker" and run.generator["cores"] > 0
        assert job.progress["percent"] == 100.0

        # through the gateway, not streamed, with a temporary key revoked afterwards
        plain = services.create_profile(
            ctx,
            name=f"plain-{suffix}",
            spec={
                "levels": [2],
                "requests_per_level": REQUESTS,
                "stream": False,
                "prompt_tokens": 16,
                "output_tokens": OUTPUT,
                "api": "completions",
            },
        )
        via = services.start_benchmark(ctx, plain, deployment=deployment)
        wait_until(lambda: finished(via), 120, message=why)
        assert job_of(via).state == "succeeded", job_of(via).error
        via.refresh_from_db()
        assert via.targets[0]["kind"] == "deployment" and via.targets[0]["url"].startswith(
            served.url
        )
        check_level(via.results[0]["levels"][0], requests=REQUESTS, stream=False)
        key = AccessKey.objects.get(name=f"benchmark job {via.job_id}")
        assert key.revoked_at is not None and key.allowed_models == [name]

        # a suite through the gateway: one case passes, one fails, each says why
        suite = services.create_suite(
            ctx,
            name=f"suite-{suffix}",
            cases=[
                {
                    "name": "short",
                    "prompt": "Hello",
                    "max_tokens": 4,
                    "check": {"type": "max_tokens", "value": 4},
                },
                {
                    "name": "impossible",
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 4,
                    "check": {"type": "exact", "value": "zz-never-zz"},
                },
            ],
        )
        checked = services.start_suite(ctx, suite, deployment=deployment)
        wait_until(lambda: finished(checked), 120, message=why)
        assert job_of(checked).state == "succeeded", job_of(checked).error
        checked.refresh_from_db()
        [result] = checked.results
        assert result["pass_rate"] == 0.5 and result["passed"] == 1, result
        short, impossible = result["cases"]
        assert short["passed"] and short["tokens"] <= 4 and short["latency_ms"] > 0
        assert not impossible["passed"] and "zz-never-zz" in impossible["why"]
        assert impossible["answer"]  # the model's answer is kept

        # a level longer than the agents' 5 s metrics round: what the replica used, measured
        steady = services.create_profile(
            ctx,
            name=f"steady-{suffix}",
            spec={
                "levels": [2],
                "requests_per_level": None,
                "duration_s": 7,
                "prompt_tokens": 16,
                "output_tokens": OUTPUT,
                "api": "completions",
            },
        )
        used = services.start_benchmark(ctx, steady, replicas=replicas[:1])
        wait_until(lambda: finished(used), 60, message=why)
        used.refresh_from_db()
        [replica_usage] = used.results[0]["levels"][0]["usage"]["replicas"]
        assert replica_usage["replica"] == replicas[0].pk
        assert replica_usage["cpu_percent"]["samples"] >= 1, replica_usage
        assert replica_usage["cpu_percent"]["mean"] > 0 and replica_usage["memory_bytes"]["max"] > 0
        print("replica usage during a 7 s level:", replica_usage)

        # cancel mid-run: it stops within seconds, finished levels kept
        long = services.create_profile(
            ctx,
            name=f"long-{suffix}",
            spec={
                "levels": [1, 1],
                "requests_per_level": None,
                "duration_s": 60,
                "prompt_tokens": 16,
                "output_tokens": OUTPUT,
                "api": "completions",
            },
        )
        cancelled = services.start_benchmark(ctx, long, replicas=replicas[:1])
        wait_until(lambda: (job_of(cancelled).progress or {}).get("requests_done", 0) > 0, 60)
        from core import job_services

        job_services.request_cancel(ctx, job_of(cancelled))
        wait_until(lambda: finished(cancelled), 15, message=lambda: job_of(cancelled).log_tail)
        assert job_of(cancelled).state == "cancelled"

        # a replica killed mid-run ends the run failed, naming the replica
        doomed = replicas[1]
        killed = services.start_benchmark(ctx, long, replicas=[doomed])
        wait_until(lambda: (job_of(killed).progress or {}).get("requests_done", 0) > 0, 60)
        stage.docker_client.containers.get(doomed.container_name).kill()
        wait_until(lambda: finished(killed), 60, message=lambda: job_of(killed).log_tail)
        failed = job_of(killed)
        print("killed mid-run:", failed.error)
        assert failed.state == "failed"
        assert f"eplica {doomed.pk}" in failed.error or "requests failed" in failed.error, (
            failed.error
        )

        # the agent of the node under test killed mid-run: the run fails once the node is
        # unreachable (its container still answers, but nobody watches over it any more)
        stage.settings.FLEET_NODE_GRACE_SECONDS = 3
        alive = replicas[0]
        orphaned = services.start_benchmark(ctx, long, replicas=[alive])
        wait_until(lambda: (job_of(orphaned).progress or {}).get("requests_done", 0) > 0, 60)
        agents[alive.node_id].kill()
        wait_until(lambda: finished(orphaned), 30, message=lambda: job_of(orphaned).log_tail)
        failed = job_of(orphaned)
        print("agent killed mid-run:", failed.error)
        assert failed.state == "failed" and "stopped reporting" in failed.error, failed.error
        assert alive.node.name in failed.error
    finally:
        served.stop()
        loop.stop()
