"""The ``benchmark`` job on the control worker: every level of the profile on every target.

The load generator runs on a thread with its own event loop; this thread reports progress
about twice a second (which renews the lease and answers whether to cancel), watches the
targets' replica rows (a replica that failed or went away ends the run failed, with its
reason) and writes each finished level into the run, so the page shows results as they come.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import psutil
from django.utils import timezone

from benchmarks import loadgen, profiles, usage
from benchmarks.models import BenchmarkRun
from benchmarks.run_support import (
    FAILED_SHARE_LIMIT,
    CpuMeter,
    LeaseLost,
    Progress,
    Stop,
    check_targets,
    failing,
    gateway_key,
    in_thread,
    target_of,
    worker_id,
)
from core import job_services

log = logging.getLogger(__name__)


def run_benchmark(job_id: int, owner: str | None = None) -> str:
    owner = owner or worker_id()
    job = job_services.claim(job_id, owner)
    if job is None:
        return "skipped"
    run = BenchmarkRun.objects.filter(job_id=job_id).first()
    if run is None:
        job_services.finish(job_id, owner, outcome="failed", error="Its run row is gone.")
        return "failed"
    spec = run.profile_spec
    levels = profiles.levels_of(spec)
    load = profiles.load_of(spec, seed=run.pk)
    progress = Progress(job_id, owner)
    meter = CpuMeter()
    results: list[dict[str, Any]] = [{"target": t["label"], "levels": []} for t in run.targets]
    steps = len(levels) * len(run.targets)
    state: dict[str, Any] = {"step": 0, "label": "", "done": 0}
    started = time.monotonic()

    def snapshot() -> dict[str, Any]:
        level = levels[min(state["step"] // max(1, len(run.targets)), len(levels) - 1)]
        per = level.requests or 0
        fraction = (state["step"] + (min(1.0, state["done"] / per) if per else 0.0)) / steps
        elapsed = time.monotonic() - started
        return {
            "stage": state["label"],
            "step": state["step"] + 1,
            "steps": steps,
            "requests_done": state["done"],
            "requests_total": per or None,
            "percent": round(100.0 * fraction, 1),
            "eta_s": round(elapsed / fraction - elapsed, 1) if fraction > 0.02 else None,
            "generator_cpu_percent": meter.mean(),
        }

    budget = steps * (spec["duration_s"] or spec["timeout_s"] * 4) + 600
    outcome, error = "succeeded", ""
    try:
        with gateway_key(run, budget) as secret:
            check_targets(run)
            progress.note(
                f"{profiles.describe(spec)} on {len(run.targets)} target(s); the load "
                f"generator runs in the control worker on {socket.gethostname()}"
            )
            for li, level in enumerate(levels):
                for ti, t in enumerate(run.targets):
                    state.update(label=f"{level.label} on {t['label']}", done=0)
                    stop = threading.Event()
                    meter.reset()
                    level_started = timezone.now()

                    failures: list[loadgen.Sample] = []

                    def on_sample(
                        sample: loadgen.Sample, failures: list[loadgen.Sample] = failures
                    ) -> None:
                        state["done"] += 1
                        if sample.error:
                            failures.append(sample)

                    def work(
                        stop: threading.Event,
                        t: dict[str, Any] = t,
                        level: Any = level,
                        li: int = li,
                    ) -> loadgen.LevelRun:
                        return asyncio.run(
                            loadgen.run_level(
                                target_of(t, secret),
                                load,
                                level,
                                on_sample=on_sample,
                                should_stop=stop.is_set,
                                first_index=li * 100_000,
                            )
                        )

                    def watch(
                        t: dict[str, Any] = t,
                        level: Any = level,
                        failures: list[loadgen.Sample] = failures,
                    ) -> None:
                        meter.tick()
                        if progress.send(snapshot()):  # and the targets, as often
                            check_targets(run)
                        if (
                            len(failures) >= 10
                            and len(failures) > FAILED_SHARE_LIMIT * state["done"]
                        ):
                            raise Stop("failed", failing(failures, state["done"], level, t))

                    measured: loadgen.LevelRun = in_thread(work, watch, stop)
                    figures = loadgen.summarize(measured)
                    figures["generator_cpu_percent"] = meter.mean()
                    figures["generator_cpu_peak_percent"] = round(meter.peak, 1)
                    figures["usage"] = usage.during(run, t, level_started, timezone.now())
                    results[ti]["levels"].append(figures)
                    BenchmarkRun.objects.filter(pk=run.pk).update(results=results)
                    progress.note(
                        f"{level.label} on {t['label']}: {figures['completed']} ok, "
                        f"{figures['errors']} failed, {figures['output_tokens_per_s']} tok/s"
                    )
                    check_targets(run)
                    if figures["requests"] and figures["errors"] > (
                        FAILED_SHARE_LIMIT * figures["requests"]
                    ):
                        failed = [s for s in measured.samples if s.error]
                        raise Stop("failed", failing(failed, figures["requests"], level, t))
                    state["step"] += 1
    except Stop as stop_:
        outcome, error = stop_.outcome, stop_.message
    except LeaseLost:
        log.warning("benchmark job %s: lease lost; stopping", job_id)
        return "lost"
    except Exception as exc:
        log.exception("benchmark job %s failed", job_id)
        outcome, error = "failed", f"Unexpected error in the control worker: {exc!r}"
    generator = {
        "location": "control worker",
        "host": socket.gethostname(),
        "cores": psutil.cpu_count() or 0,
        "cpu_percent_mean": round(
            sum(lv["generator_cpu_percent"] for r in results for lv in r["levels"])
            / max(1, sum(len(r["levels"]) for r in results)),
            1,
        ),
        "cpu_percent_max": max(
            (lv["generator_cpu_peak_percent"] for r in results for lv in r["levels"]), default=0
        ),
    }
    BenchmarkRun.objects.filter(pk=run.pk).update(results=results, generator=generator)
    job_services.finish(
        job_id,
        owner,
        outcome=outcome,
        error=error,
        result={"run": run.pk, "levels": sum(len(r["levels"]) for r in results)},
        progress={**snapshot(), "stage": "done" if outcome == "succeeded" else outcome},
        log_text="\n".join(progress.lines),
    )
    return outcome
