"""The rollout gate (``deployments.gates``): benchmark and suite runs on the new and the
stable replica in the same runs, then the thresholds of the revision's ``strategy.gates``.

Serving thresholds hold at every level of the profile (the worst level decides); the
absolute tokens/s floor applies to the new revision's best level. Without a stable replica
to compare with (a first rollout, or none available), ratio checks are skipped and say so;
absolute ones still apply.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import transaction
from django.utils import timezone

from benchmarks import services
from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TestSuite
from core import job_services
from core.errors import ServiceError
from core.history import ChangeContext
from core.jobs import JobState
from deployments import gates

NEW, STABLE = "new", "stable"


def _ctx(rollout: Any) -> ChangeContext:
    return ChangeContext.system(
        "rollout gate", reason=f"gate of revision {rollout.to_revision.number}"
    )


def _check(name: str, new: float | None, limit: float | None, op: str, rule: str) -> dict:
    if new is None or limit is None:
        return {
            "name": name,
            "new": new,
            "limit": limit,
            "rule": rule,
            "passed": False,
            "skipped": False,
            "why": "no figure (every request failed?)",
        }
    passed = new >= limit if op == ">=" else new <= limit
    return {
        "name": name,
        "new": round(new, 3),
        "limit": round(limit, 3),
        "rule": rule,
        "passed": passed,
        "skipped": False,
        "why": "",
    }


def _skip(name: str, why: str) -> dict:
    return {
        "name": name,
        "new": None,
        "limit": None,
        "rule": "",
        "passed": True,
        "skipped": True,
        "why": why,
    }


def _benchmark_checks(run: BenchmarkRun, thresholds: dict[str, Any]) -> list[dict]:
    by_label = {r["target"]: r["levels"] for r in run.results}
    new_levels = by_label.get(NEW, [])
    stable_levels = by_label.get(STABLE)
    checks: list[dict] = []
    ratio = thresholds.get("min_tokens_per_s_ratio")
    p99 = thresholds.get("max_p99_latency_ratio")
    for i, level in enumerate(new_levels):
        label = level["label"]
        old = stable_levels[i] if stable_levels and i < len(stable_levels) else None
        if ratio is not None:
            name = f"output tokens/s at {label}"
            if old is None:
                checks.append(_skip(name, "no stable replica to compare with"))
            else:
                checks.append(
                    _check(
                        name,
                        level["output_tokens_per_s"],
                        ratio * old["output_tokens_per_s"],
                        ">=",
                        f"≥ {ratio:g} × stable ({old['output_tokens_per_s']})",
                    )
                )
        if p99 is not None:
            name = f"p99 latency at {label}"
            old_p99 = old["latency_ms"]["p99"] if old else None
            if old_p99 is None:
                checks.append(_skip(name, "no stable figure to compare with"))
            else:
                checks.append(
                    _check(
                        name,
                        level["latency_ms"]["p99"],
                        p99 * old_p99,
                        "<=",
                        f"≤ {p99:g} × stable ({old_p99} ms)",
                    )
                )
    floor = thresholds.get("min_output_tokens_per_s")
    if floor is not None:
        best = max((lv["output_tokens_per_s"] for lv in new_levels), default=None)
        checks.append(_check("best output tokens/s", best, float(floor), ">=", f"≥ {floor:g}"))
    return checks


def _suite_checks(run: SuiteRun, thresholds: dict[str, Any]) -> list[dict]:
    rates = {r["target"]: r.get("pass_rate") for r in run.results}
    checks: list[dict] = []
    floor = thresholds.get("min_pass_rate")
    if floor is not None:
        checks.append(
            _check(
                f"pass rate of {run.suite_name}", rates.get(NEW), float(floor), ">=", f"≥ {floor:g}"
            )
        )
    if thresholds.get("pass_rate_vs_stable"):
        name = f"pass rate of {run.suite_name} vs stable"
        if rates.get(STABLE) is None:
            checks.append(_skip(name, "no stable replica to compare with"))
        else:
            checks.append(
                _check(name, rates.get(NEW), rates[STABLE], ">=", f"≥ stable ({rates[STABLE]})")
            )
    return checks


class GateRunner:
    def unknown(self, spec: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        name = spec.get("benchmark")
        if name and not BenchmarkProfile.objects.filter(name=name).exists():
            errors["benchmark"] = f"No benchmark profile named {name!r}."
        names = list(spec.get("suites") or [])
        known = set(TestSuite.objects.filter(name__in=names).values_list("name", flat=True))
        missing = [n for n in names if n not in known]
        if missing:
            errors["suites"] = f"No test suite named {', '.join(map(repr, missing))}."
        return errors

    @transaction.atomic  # all of the gate's runs, or none (a suite deleted meanwhile)
    def start(self, rollout: Any, spec: dict[str, Any], new: Any, stable: Any | None) -> dict:
        ctx = _ctx(rollout)
        replicas = [new] + ([stable] if stable is not None else [])
        labels = [NEW] + ([STABLE] if stable is not None else [])
        gate: dict[str, Any] = {
            "state": gates.GATE_RUNNING,
            "started_at": timezone.now().isoformat(),
            "new_replica": new.pk,
            "stable_replica": stable.pk if stable is not None else None,
            "benchmark_run": None,
            "suite_runs": [],
        }
        if spec.get("benchmark"):
            profile = BenchmarkProfile.objects.filter(name=spec["benchmark"]).first()
            if profile is None:
                raise ServiceError(f"the benchmark profile {spec['benchmark']!r} was deleted")
            run = services.start_benchmark(
                ctx, profile, replicas=replicas, labels=labels, rollout=rollout
            )
            gate["benchmark_run"] = run.pk
        for name in spec.get("suites") or []:
            suite = TestSuite.objects.filter(name=name).first()
            if suite is None:
                raise ServiceError(f"the test suite {name!r} was deleted")
            gate["suite_runs"].append(
                services.start_suite(
                    ctx, suite, replicas=replicas, labels=labels, rollout=rollout
                ).pk
            )
        return gate

    def _runs(self, gate: dict[str, Any]) -> tuple[BenchmarkRun | None, list[SuiteRun]]:
        bench = (
            BenchmarkRun.objects.select_related("job").filter(pk=gate["benchmark_run"]).first()
            if gate.get("benchmark_run")
            else None
        )
        suite_runs = list(SuiteRun.objects.select_related("job").filter(pk__in=gate["suite_runs"]))
        return bench, suite_runs

    def verdict(self, rollout: Any, spec: dict[str, Any]) -> dict | None:
        gate = dict(rollout.gate)
        bench, suite_runs = self._runs(gate)
        runs: list[BenchmarkRun | SuiteRun] = [*([bench] if bench else []), *suite_runs]
        if any(not r.job.is_finished for r in runs):
            return None
        thresholds = dict(spec.get("thresholds") or {})
        broken = [r for r in runs if r.job.state != JobState.SUCCEEDED]
        checks: list[dict] = []
        if bench is not None and bench.job.state == JobState.SUCCEEDED:
            checks += _benchmark_checks(bench, thresholds)
        for run in suite_runs:
            if run.job.state == JobState.SUCCEEDED:
                checks += _suite_checks(run, thresholds)
        failed = [c for c in checks if not c["passed"]]
        if broken:
            first = broken[0]
            summary = (
                f"job {first.job_id} {first.job.state}: {first.job.error or 'no reason given'}"
            )
        elif failed:
            c = failed[0]
            summary = (
                f"{len(failed)} of {len(checks)} checks failed; first: {c['name']} = "
                f"{c.get('new')} (needs {c.get('rule')})"
            )
        else:
            counted = [c for c in checks if not c.get("skipped")]
            summary = f"{len(counted)} of {len(counted)} checks passed"
            if len(counted) < len(checks):
                summary += f" ({len(checks) - len(counted)} skipped: nothing to compare with)"
        gate.update(
            state=gates.GATE_FAILED if broken or failed else gates.GATE_PASSED,
            finished_at=timezone.now().isoformat(),
            checks=checks,
            summary=summary,
        )
        return gate

    def cancel(self, rollout: Any) -> None:
        bench, suite_runs = self._runs(dict(rollout.gate))
        for run in [*([bench] if bench else []), *suite_runs]:
            if not run.job.is_finished:
                with contextlib.suppress(ServiceError):  # finished meanwhile
                    job_services.request_cancel(_ctx(rollout), run.job)
