"""End to end: rollouts gated on a benchmark and a test suite, on real llama.cpp replicas.

One replica of the tiny GGUF is the stable revision. A new revision whose gate needs a
tokens/s floor far above what it can reach is measured next to the stable replica (which is
held meanwhile) and reverted, with the figures on the rollout and in history; one whose gate
it meets promotes.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from benchmarks import services
from benchmarks.models import BenchmarkRun, SuiteRun
from core.models import HistoryEvent
from deployments import services as deployment_services
from deployments.choices import RolloutState
from deployments.models import Deployment, Replica, Rollout
from deployments.rollouts import LIVE
from tests.deployments import e2e
from tests.fleet.agents import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def rollout_to(deployment: Deployment, number: int) -> Rollout | None:
    return (
        Rollout.objects.filter(deployment=deployment, to_revision__number=number)
        .order_by("-pk")
        .first()
    )


def finished(deployment: Deployment, number: int) -> bool:
    rollout = rollout_to(deployment, number)
    return rollout is not None and rollout.state != RolloutState.RUNNING


def test_gate_that_fails_reverts_and_one_that_passes_promotes(stage: e2e.Stage):
    runner, ctx = stage.runner, stage.ctx
    stage.configure()
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    e2e.start(runner, f"gate-a-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    try:
        name = f"gate-{suffix}"
        deployment = deployment_services.create_deployment(ctx, name, e2e.llamacpp_spec(variant, 1))
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 90, message=why)
        stable = deployment.current_revision.number
        bench = services.create_profile(
            ctx,
            name=f"gate-bench-{suffix}",
            spec={
                "levels": [1, 2],
                "requests_per_level": 8,
                "api": "completions",
                "prompt_tokens": 16,
                "output_tokens": 12,
            },
        )
        suite = services.create_suite(
            ctx,
            name=f"gate-suite-{suffix}",
            cases=[
                {
                    "name": "short",
                    "prompt": "Hi",
                    "max_tokens": 4,
                    "check": {"type": "max_tokens", "value": 4},
                }
            ],
        )

        # a floor far above what the tiny model reaches: measured, failed, reverted
        deployment = deployment_services.update_spec(
            ctx,
            deployment,
            {
                "runtime_args": {"context_size": 512},
                "strategy": {
                    "gates": {
                        "benchmark": bench.name,
                        "thresholds": {"min_output_tokens_per_s": 1e9},
                    }
                },
            },
        )
        failing = deployment.current_revision.number
        replicas_seen: set[tuple[int, int]] = set()

        def watch() -> bool:
            for r in Replica.objects.filter(deployment=deployment, state__in=LIVE):
                replicas_seen.add((r.pk, r.revision.number))
            return finished(deployment, failing)

        wait_until(watch, 120, message=why)
        rollout = rollout_to(deployment, failing)
        assert rollout.state == RolloutState.FAILED, (rollout.state, rollout.failure_reason)
        assert "rollout gate failed" in rollout.failure_reason
        gate = rollout.gate
        assert gate["state"] == "failed" and gate["stable_replica"] is not None
        [floor] = [c for c in gate["checks"] if c["name"] == "best output tokens/s"]
        assert not floor["passed"] and 0 < floor["new"] < 1e9
        run = BenchmarkRun.objects.get(pk=gate["benchmark_run"])
        assert [r["target"] for r in run.results] == ["new", "stable"]  # both, in one run
        assert all(lv["completed"] == 8 for r in run.results for lv in r["levels"])
        assert run.rollout_id == rollout.pk
        event = HistoryEvent.objects.get(target_id=str(deployment.pk), verb="gate_failed")
        assert event.changes["gate"]["after"]["revision"] == failing
        assert HistoryEvent.objects.filter(
            target_id=str(deployment.pk), verb="auto_reverted"
        ).exists()
        wait_until(lambda: e2e.settled(deployment, 1), 90, message=why)
        assert deployment.current_revision.number == stable
        assert {n for _, n in replicas_seen} >= {stable, failing}  # the stable one was held

        # a gate it meets: the rollout goes on and promotes the revision
        deployment = deployment_services.update_spec(
            ctx,
            deployment,
            {
                "runtime_args": {"context_size": 512},
                "strategy": {
                    "gates": {
                        "benchmark": bench.name,
                        "suites": [suite.name],
                        "thresholds": {
                            "min_tokens_per_s_ratio": 0.05,
                            "max_p99_latency_ratio": 50,
                            "min_pass_rate": 1.0,
                        },
                    }
                },
            },
        )
        passing = deployment.current_revision.number
        wait_until(lambda: finished(deployment, passing), 120, message=why)
        rollout = rollout_to(deployment, passing)
        assert rollout.state == RolloutState.SUCCEEDED, (rollout.failure_reason, rollout.gate)
        assert rollout.gate["state"] == "passed", rollout.gate
        assert rollout.gate["summary"].startswith("5 of 5 checks passed"), rollout.gate["summary"]
        [suite_run] = SuiteRun.objects.filter(pk__in=rollout.gate["suite_runs"])
        assert {r["target"]: r["pass_rate"] for r in suite_run.results} == {
            "new": 1.0,
            "stable": 1.0,
        }
        assert HistoryEvent.objects.filter(
            target_id=str(deployment.pk), verb="gate_passed"
        ).exists()
        wait_until(lambda: e2e.settled(deployment, 1), 60, message=why)
        deployment.refresh_from_db()
        assert deployment.stable_revision.number == passing

        # the deployment page shows both gates with their checks and links to the runs
        client = Client()
        client.force_login(ctx.user)
        page = client.get(reverse("deployments-detail", args=[deployment.pk])).content.decode()
        assert page.count('data-testid="rollout-gate"') >= 2
        assert "best output tokens/s" in page and f"benchmark #{run.pk}" in page
    finally:
        loop.stop()
