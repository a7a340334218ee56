"""Permission-matrix rows for benchmarks and test suites (tests/matrix_kit.py).

Everyone signed in reads profiles, suites, runs and their exports; operators create, change
and delete profiles and suites, start runs and cancel them.
"""

from __future__ import annotations

from typing import Any

from benchmarks import services
from benchmarks.models import BenchmarkProfile, BenchmarkRun, TestSuite
from core.history import ChangeContext
from core.jobs import JobState
from deployments import services as deployment_services
from deployments.choices import ReplicaState
from deployments.models import Replica
from tests.benchmarks.support import benchmark_run, suite_run
from tests.matrix_kit import api, everyone, operators, page

CASES = [{"name": "c", "prompt": "Hi", "check": {"type": "contains", "value": "h"}}]


def setup(world: Any) -> None:
    ctx = ChangeContext.for_user(world.users["admin"])
    profile = services.create_profile(ctx, name="matrix-profile", spec={"levels": [1]})
    suite = services.create_suite(ctx, name="matrix-suite", cases=CASES)
    # a deployment of its own with an available replica row, so operators can start runs
    # (nobody consumes the jobs here); the world's deployment stays without live replicas
    deployment = deployment_services.create_deployment(
        ctx,
        "matrix-bench",
        {"variant": world.deployment.current_revision.variant_id, "runtime": "llamacpp"},
    )
    Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=7,
        node=world.node,
        state=ReplicaState.AVAILABLE,
        host_port=1,
    )
    world.extra.update(
        bench_profile=profile,
        bench_suite=suite,
        bench_deployment=deployment,
        bench_run=benchmark_run(deployment, profile),
        bench_running=benchmark_run(deployment, profile, state=JobState.RUNNING),
        bench_suite_run=suite_run(deployment, suite),
        bench_suite_running=suite_run(deployment, suite, state=JobState.RUNNING),
    )


def placeholders(world: Any, persona: str) -> dict[str, Any]:
    extra = world.extra
    return {
        "bench_profile": extra["bench_profile"].pk,
        "bench_suite": extra["bench_suite"].pk,
        "bench_run": extra["bench_run"].pk,
        "bench_running": extra["bench_running"].pk,
        "bench_suite_run": extra["bench_suite_run"].pk,
        "bench_suite_running": extra["bench_suite_running"].pk,
        "bench_deployment": extra["bench_deployment"].name,
    }


def profile_made(response: Any, persona: str, world: Any) -> None:
    made = BenchmarkProfile.objects.filter(name="new-profile").exists()
    assert made == (persona in ("admin", "operator"))


def suite_gone(response: Any, persona: str, world: Any) -> None:
    gone = not TestSuite.objects.filter(pk=world.extra["bench_suite"].pk).exists()
    assert gone == (persona in ("admin", "operator"))


def run_started(response: Any, persona: str, world: Any) -> None:
    started = BenchmarkRun.objects.count() == 3
    assert started == (persona in ("admin", "operator"))


def cancel_asked(response: Any, persona: str, world: Any) -> None:
    run = BenchmarkRun.objects.select_related("job").get(pk=world.extra["bench_running"].pk)
    assert run.job.cancel_requested == (persona in ("admin", "operator"))


API = "/api/v1/benchmarks/"
PROFILE = API + "profiles/{bench_profile}/"
SUITE = API + "suites/{bench_suite}/"
RUN = API + "runs/{bench_run}/"

ROWS = [
    api("bm-profiles-list", "benchmark-profile-list", "GET", API + "profiles/", **everyone(200)),
    api("bm-profiles-retrieve", "benchmark-profile-detail", "GET", PROFILE, **everyone(200)),
    api(
        "bm-profiles-create",
        "benchmark-profile-list",
        "POST",
        API + "profiles/",
        **operators(201),
        body={"name": "new-profile", "spec": {"levels": [1, 2]}},
        check=profile_made,
    ),
    api(
        "bm-profiles-update",
        "benchmark-profile-detail",
        "PATCH",
        PROFILE,
        **operators(200),
        body={"spec": {"levels": [4]}},
    ),
    api("bm-profiles-delete", "benchmark-profile-detail", "DELETE", PROFILE, **operators(204)),
    api("bm-suites-list", "test-suite-list", "GET", API + "suites/", **everyone(200)),
    api("bm-suites-retrieve", "test-suite-detail", "GET", SUITE, **everyone(200)),
    api(
        "bm-suites-create",
        "test-suite-list",
        "POST",
        API + "suites/",
        **operators(201),
        body={"name": "new-suite", "cases": CASES},
    ),
    api(
        "bm-suites-update",
        "test-suite-detail",
        "PATCH",
        SUITE,
        **operators(200),
        body={"description": "changed"},
    ),
    api(
        "bm-suites-delete", "test-suite-detail", "DELETE", SUITE, **operators(204), check=suite_gone
    ),
    api("bm-runs-list", "benchmark-run-list", "GET", API + "runs/", **everyone(200)),
    api("bm-runs-retrieve", "benchmark-run-detail", "GET", RUN, **everyone(200)),
    api(
        "bm-runs-create",
        "benchmark-run-list",
        "POST",
        API + "runs/",
        **operators(201),
        body={"profile": "matrix-profile", "deployment": "{bench_deployment}"},
        check=run_started,
    ),
    api(
        "bm-runs-cancel",
        "benchmark-run-cancel",
        "POST",
        API + "runs/{bench_running}/cancel/",
        **operators(200),
        body={"reason": "matrix"},
        check=cancel_asked,
    ),
    api(
        "bm-runs-compare",
        "benchmark-run-compare",
        "GET",
        API + "runs/compare/",
        **everyone(200),
        body={"ids": "{bench_run}"},
    ),
    api(
        "bm-runs-export",
        "benchmark-run-export",
        "GET",
        API + "runs/export/",
        **everyone(200),
        body={"ids": "{bench_run}", "file": "csv"},
    ),
    api("bm-suite-runs-list", "suite-run-list", "GET", API + "suite-runs/", **everyone(200)),
    api(
        "bm-suite-runs-retrieve",
        "suite-run-detail",
        "GET",
        API + "suite-runs/{bench_suite_run}/",
        **everyone(200),
    ),
    api(
        "bm-suite-runs-create",
        "suite-run-list",
        "POST",
        API + "suite-runs/",
        **operators(201),
        body={"suite": "matrix-suite", "deployment": "{bench_deployment}"},
    ),
    api(
        "bm-suite-runs-cancel",
        "suite-run-cancel",
        "POST",
        API + "suite-runs/{bench_suite_running}/cancel/",
        **operators(200),
        body={},
    ),
    # pages
    page("bm-page-index", "benchmarks", "GET", "/benchmarks/", **everyone(200)),
    page("bm-page-run", "benchmarks-run", "GET", "/benchmarks/runs/{bench_run}/", **everyone(200)),
    page(
        "bm-page-run-body",
        "benchmarks-run-body",
        "GET",
        "/benchmarks/runs/{bench_run}/body/",
        **everyone(200),
    ),
    page(
        "bm-page-run-cancel",
        "benchmarks-run-cancel",
        "POST",
        "/benchmarks/runs/{bench_running}/cancel/",
        **operators(302),
        check=cancel_asked,
    ),
    page(
        "bm-page-compare",
        "benchmarks-compare",
        "GET",
        "/benchmarks/compare/",
        **everyone(200),
        body={"ids": "{bench_run}"},
    ),
    page(
        "bm-page-suite-run",
        "benchmarks-suite-run",
        "GET",
        "/benchmarks/suite-runs/{bench_suite_run}/",
        **everyone(200),
    ),
    page(
        "bm-page-suite-run-body",
        "benchmarks-suite-run-body",
        "GET",
        "/benchmarks/suite-runs/{bench_suite_run}/body/",
        **everyone(200),
    ),
    page(
        "bm-page-profile",
        "benchmarks-profile",
        "GET",
        "/benchmarks/profiles/{bench_profile}/",
        **everyone(200),
    ),
    page(
        "bm-page-profile-new",
        "benchmarks-profile-new",
        "GET",
        "/benchmarks/profiles/new/",
        **everyone(200),
    ),
    page(
        "bm-page-profile-delete",
        "benchmarks-profile-delete",
        "POST",
        "/benchmarks/profiles/{bench_profile}/delete/",
        **operators(302),
    ),
    page(
        "bm-page-suite",
        "benchmarks-suite",
        "GET",
        "/benchmarks/suites/{bench_suite}/",
        **everyone(200),
    ),
    page(
        "bm-page-suite-new",
        "benchmarks-suite-new",
        "GET",
        "/benchmarks/suites/new/",
        **everyone(200),
    ),
    page(
        "bm-page-suite-delete",
        "benchmarks-suite-delete",
        "POST",
        "/benchmarks/suites/{bench_suite}/delete/",
        **operators(302),
        check=suite_gone,
    ),
]
