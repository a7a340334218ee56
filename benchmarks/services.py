"""Writes of the benchmarks app: profiles, suites, and starting runs (each with history)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from benchmarks import profiles, suites, targets
from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TargetKind, TestSuite
from core import job_services
from core.errors import ConflictError, ServiceError, check_version
from core.history import ChangeContext, diff, record, snapshot
from core.jobs import Job, JobKind
from deployments.models import Deployment, Replica

PROFILE_FIELDS = ("name", "description", "spec")
SUITE_FIELDS = ("name", "description", "cases")


def _name(value: Any) -> str:
    name = str(value or "").strip()
    if not name:
        raise ServiceError("Give it a name.", field="name")
    return name


# --- Profiles and suites --------------------------------------------------------------------
def _spec(spec: Any) -> dict[str, Any]:
    """The profile spec normalized; its errors name ``spec.<field>``."""
    try:
        return profiles.normalize(spec)
    except ServiceError as exc:
        field = exc.field if exc.field in (None, "spec") else f"spec.{exc.field}"
        raise ServiceError(exc.message, field=field) from None


@transaction.atomic
def create_profile(
    ctx: ChangeContext, *, name: str, spec: dict[str, Any], description: str = ""
) -> BenchmarkProfile:
    name = _name(name)
    if BenchmarkProfile.objects.filter(name=name).exists():
        raise ConflictError(f"A benchmark profile named {name!r} exists.", field="name")
    profile = BenchmarkProfile.objects.create(
        name=name,
        description=description.strip(),
        spec=_spec(spec),
        created_by=ctx.user,
    )
    record(ctx, "created", profile, changes=diff({}, snapshot(profile, PROFILE_FIELDS)))
    return profile


@transaction.atomic
def update_profile(
    ctx: ChangeContext,
    profile: BenchmarkProfile,
    *,
    expected_version: int | None = None,
    spec: dict[str, Any] | None = None,
    description: str | None = None,
) -> BenchmarkProfile:
    profile = BenchmarkProfile.objects.select_for_update().get(pk=profile.pk)
    check_version(profile.version, expected_version, f"Profile {profile.name}")
    before = snapshot(profile, PROFILE_FIELDS)
    if spec is not None:
        profile.spec = _spec({**profile.spec, **spec})
    if description is not None:
        profile.description = description.strip()
    changes = diff(before, snapshot(profile, PROFILE_FIELDS))
    if changes:
        profile.version += 1
        profile.updated_at = timezone.now()
        profile.save()
        record(ctx, "updated", profile, changes=changes)
    return profile


@transaction.atomic
def delete_profile(ctx: ChangeContext, profile: BenchmarkProfile) -> None:
    record(ctx, "deleted", profile, changes=diff(snapshot(profile, PROFILE_FIELDS), {}))
    profile.delete()  # runs keep their copy of the spec


@transaction.atomic
def create_suite(
    ctx: ChangeContext, *, name: str, cases: list[dict[str, Any]], description: str = ""
) -> TestSuite:
    name = _name(name)
    if TestSuite.objects.filter(name=name).exists():
        raise ConflictError(f"A test suite named {name!r} exists.", field="name")
    suite = TestSuite.objects.create(
        name=name,
        description=description.strip(),
        cases=suites.normalize_cases(cases),
        created_by=ctx.user,
    )
    record(ctx, "created", suite, changes=diff({}, snapshot(suite, SUITE_FIELDS)))
    return suite


@transaction.atomic
def update_suite(
    ctx: ChangeContext,
    suite: TestSuite,
    *,
    expected_version: int | None = None,
    cases: list[dict[str, Any]] | None = None,
    description: str | None = None,
) -> TestSuite:
    suite = TestSuite.objects.select_for_update().get(pk=suite.pk)
    check_version(suite.version, expected_version, f"Suite {suite.name}")
    before = snapshot(suite, SUITE_FIELDS)
    if cases is not None:
        suite.cases = suites.normalize_cases(cases)
    if description is not None:
        suite.description = description.strip()
    changes = diff(before, snapshot(suite, SUITE_FIELDS))
    if changes:
        suite.version += 1
        suite.updated_at = timezone.now()
        suite.save()
        record(ctx, "updated", suite, changes=changes)
    return suite


@transaction.atomic
def delete_suite(ctx: ChangeContext, suite: TestSuite) -> None:
    record(ctx, "deleted", suite, changes=diff(snapshot(suite, SUITE_FIELDS), {}))
    suite.delete()


# --- Runs -----------------------------------------------------------------------------------
def resolve_targets(
    *,
    deployment: Deployment | None = None,
    replicas: list[Replica] | None = None,
    labels: list[str] | None = None,
) -> tuple[str, Deployment, list[dict[str, Any]]]:
    """(target kind, deployment, targets) for a run on a deployment or on replicas of one."""
    if replicas:
        owners = {r.deployment_id for r in replicas}
        if len(owners) != 1:
            raise ServiceError(
                "The replicas of one run belong to one deployment.", field="replicas"
            )
        names = labels or [""] * len(replicas)
        found = [targets.for_replica(r, label=lbl) for r, lbl in zip(replicas, names, strict=True)]
        return TargetKind.REPLICA, replicas[0].deployment, found
    if deployment is None:
        raise ServiceError("Name a deployment or replicas to run against.", field="deployment")
    if deployment.current_revision is None:
        raise ServiceError(f"{deployment.name} has no revision yet.", field="deployment")
    available = targets.replicas_of(deployment)
    if not available:
        raise ServiceError(
            f"{deployment.name} has no available replica: scale it up (or send a request to "
            "start it from zero) and run again.",
            field="deployment",
        )
    return TargetKind.DEPLOYMENT, deployment, [targets.for_deployment(deployment, available)]


def _start(
    ctx: ChangeContext,
    model: type[BenchmarkRun] | type[SuiteRun],
    job_kind: str,
    what: str,
    fields: dict[str, Any],
    *,
    deployment: Deployment | None,
    replicas: list[Replica] | None,
    labels: list[str] | None,
    rollout: Any,
) -> Any:
    """A run row and the job that executes it on the control worker (in one transaction)."""
    kind, deployment, found = resolve_targets(
        deployment=deployment, replicas=replicas, labels=labels
    )
    job = job_services.create_job(
        ctx,
        kind=job_kind,
        target_type="deployments.deployment",
        target_id=deployment.pk,
        target_name=f"{deployment.name} · {what}",
        max_attempts=1,  # a run re-started after a lost lease would measure something else
    )
    run = model.objects.create(
        job=job,
        target_kind=kind,
        deployment=deployment,
        deployment_name=deployment.name,
        targets=found,
        rollout=rollout,
        **fields,
    )
    Job.objects.filter(pk=job.pk).update(params={"run": run.pk})
    return run


def replicas_by_ids(ids: list[int]) -> list[Replica]:
    """The replicas named by id, in that order (duplicates dropped); a 400 for a missing one."""
    ids = list(dict.fromkeys(ids))
    found = {
        r.pk: r
        for r in Replica.objects.select_related("deployment", "node", "revision").filter(pk__in=ids)
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise ServiceError(f"No replica {missing[0]}.", field="replicas")
    return [found[i] for i in ids]


@transaction.atomic
def start_benchmark(
    ctx: ChangeContext,
    profile: BenchmarkProfile,
    *,
    deployment: Deployment | None = None,
    replicas: list[Replica] | None = None,
    labels: list[str] | None = None,
    rollout: Any = None,
) -> BenchmarkRun:
    """A benchmark run of ``profile`` on a deployment (via the gateway) or on replicas."""
    fields = {"profile": profile, "profile_name": profile.name, "profile_spec": profile.spec}
    return _start(
        ctx, BenchmarkRun, JobKind.BENCHMARK, f"profile {profile.name}", fields,
        deployment=deployment, replicas=replicas, labels=labels, rollout=rollout,
    )  # fmt: skip


@transaction.atomic
def start_suite(
    ctx: ChangeContext,
    suite: TestSuite,
    *,
    deployment: Deployment | None = None,
    replicas: list[Replica] | None = None,
    labels: list[str] | None = None,
    rollout: Any = None,
) -> SuiteRun:
    """A test-suite run of ``suite`` on a deployment (via the gateway) or on replicas."""
    fields = {"suite": suite, "suite_name": suite.name, "cases": suite.cases}
    return _start(
        ctx, SuiteRun, JobKind.TEST_SUITE, f"suite {suite.name}", fields,
        deployment=deployment, replicas=replicas, labels=labels, rollout=rollout,
    )  # fmt: skip
