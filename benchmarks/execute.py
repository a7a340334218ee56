"""Running benchmark and test-suite jobs on the control worker.

The load generator runs on a thread with its own event loop; this thread reports progress
about twice a second (which renews the lease and answers whether to cancel), watches the
targets' replica rows (a replica that failed or went away ends the run failed, with its
reason) and writes each finished level into the run, so the page shows results as they
come. A deployment target gets a temporary gateway key, limited to that deployment and
revoked when the run ends, whatever the end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psutil
from django.utils import timezone

from benchmarks import loadgen, profiles, suites, usage
from benchmarks.models import BenchmarkRun, SuiteRun, TargetKind
from core import job_services
from core.history import ChangeContext
from deployments.choices import ReplicaState
from deployments.models import Replica
from gateway import services as gateway_services

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5
# a level whose requests failed this much ends the run (the target is broken, not slow)
FAILED_SHARE_LIMIT = 0.5
GATEWAY_WAIT_S = 10.0


class Stop(Exception):
    """End the run now: ``outcome`` failed or cancelled, ``message`` why."""

    def __init__(self, outcome: str, message: str = "") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class LeaseLost(Exception):
    pass


def worker_id() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


class CpuMeter:
    """This process's CPU use between two readings (100 % = one core busy)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.reset()
        self.peak = 0.0

    def _now(self) -> tuple[float, float]:
        times = self.process.cpu_times()
        return time.monotonic(), times.user + times.system

    def reset(self) -> None:
        self.start = self.last = self._now()

    def tick(self) -> None:
        now = self._now()
        wall = now[0] - self.last[0]
        if wall >= 0.2:
            self.peak = max(self.peak, 100.0 * (now[1] - self.last[1]) / wall)
            self.last = now

    def mean(self) -> float:
        now = self._now()
        wall = max(1e-9, now[0] - self.start[0])
        return round(100.0 * (now[1] - self.start[1]) / wall, 1)


@contextmanager
def gateway_key(run: BenchmarkRun | SuiteRun, seconds: float) -> Iterator[str]:
    """A key for this run's deployment only, expiring after the run's longest possible time."""
    if run.target_kind != TargetKind.DEPLOYMENT:
        yield ""
        return
    ctx = ChangeContext.system("benchmarks", reason=f"temporary key of job {run.job_id}")
    key, secret = gateway_services.create_key(
        ctx,
        name=f"benchmark job {run.job_id}",
        description="Temporary key of a benchmark or test-suite run; revoked when it ends.",
        all_models=False,
        allowed_models=[run.deployment_name],
        expires_at=timezone.now() + timedelta(seconds=seconds + 300),
    )
    try:
        _wait_for_gateway(run, secret)
        yield secret
    finally:
        try:
            gateway_services.revoke_key(ctx, key)
        except Exception:  # the key expires by itself
            log.warning("could not revoke the temporary key of job %s", run.job_id, exc_info=True)


def _wait_for_gateway(run: BenchmarkRun | SuiteRun, secret: str) -> None:
    """Until the gateway knows the new key (it learns keys over pub/sub, within a moment)."""
    url = f"{run.targets[0]['url'].rstrip('/')}/models/{run.deployment_name}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})  # noqa: S310
    deadline = time.monotonic() + GATEWAY_WAIT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (our gateway)
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise Stop(
        "failed",
        f"The gateway at {url} did not accept the run's temporary key within "
        f"{GATEWAY_WAIT_S:g} s ({last}). Check that FLEET_GATEWAY_URL points at this "
        "install's gateway and that it is up.",
    )


def check_targets(run: BenchmarkRun | SuiteRun) -> None:
    """A replica target that is no longer available ends the run, with the replica's reason."""
    ids = [t["replica"] for t in run.targets if t.get("replica")]
    if not ids:
        return
    for replica in Replica.objects.filter(pk__in=ids).select_related("node"):
        if replica.state != ReplicaState.AVAILABLE:
            why = f": {replica.reason}" if replica.reason else ""
            raise Stop(
                "failed",
                f"Replica {replica.pk} on {replica.node or 'no node'} became {replica.state}"
                f"{why}. Finished levels are kept; run it again once the "
                "deployment is ready.",
            )
    missing = set(ids) - set(Replica.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if missing:
        raise Stop("failed", f"Replica {sorted(missing)[0]} was removed during the run.")


class Progress:
    def __init__(self, job_id: int, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.last = 0.0
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        self.lines.append(line)

    def send(self, progress: dict[str, Any], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        text, self.lines = "\n".join(self.lines), []
        answer = job_services.report_progress(self.job_id, self.owner, progress, log_text=text)
        if not answer.keep_going:
            raise LeaseLost()
        if answer.cancel_requested:
            raise Stop("cancelled", "")


def _in_thread(
    work: Callable[[threading.Event], Any], watch: Callable[[], None], stop: threading.Event
) -> Any:
    """Run ``work`` on a thread, calling ``watch`` (progress, checks) until it ends."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = work(stop)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=body, name="benchmark-load", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            watch()
    except BaseException:
        stop.set()
        thread.join(60)
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _failing(
    failed: list[loadgen.Sample], requests: int, level: loadgen.Level, t: dict[str, Any]
) -> str:
    kinds: dict[str, int] = {}
    for sample in failed:
        kinds[sample.error] = kinds.get(sample.error, 0) + 1
    listed = ", ".join(f"{k} ×{n}" for k, n in kinds.items())
    return (
        f"{len(failed)} of {requests} requests failed at {level.label} on {t['label']} "
        f"({listed}; e.g. {failed[0].detail[:200]!r}). Check the target's logs and state."
    )


def _target(t: dict[str, Any], secret: str) -> loadgen.Target:
    return loadgen.Target(t["url"], t.get("model") or "", secret, t["label"])


# --- Benchmarks ------------------------------------------------------------------------------
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
                                _target(t, secret),
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
                        progress.send(snapshot())
                        if time.monotonic() - progress.last < 0.15:  # just reported: check too
                            check_targets(run)
                        if (
                            len(failures) >= 10
                            and len(failures) > FAILED_SHARE_LIMIT * state["done"]
                        ):
                            raise Stop("failed", _failing(failures, state["done"], level, t))

                    measured: loadgen.LevelRun = _in_thread(work, watch, stop)
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
                        raise Stop("failed", _failing(failed, figures["requests"], level, t))
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


# --- Test suites -----------------------------------------------------------------------------
async def ask(
    target: loadgen.Target, case: dict[str, Any], timeout_s: float
) -> tuple[str, int, float, str]:
    """(answer text, completion tokens, latency ms, error) for one case."""
    import aiohttp

    if "messages" in case:
        path, body = "/chat/completions", {"messages": case["messages"]}
    else:
        path, body = "/completions", {"prompt": case["prompt"]}
    body.update(max_tokens=case["max_tokens"], temperature=case["temperature"], stream=False)
    if target.model:
        body["model"] = target.model
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    began = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                target.base_url.rstrip("/") + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as answer,
        ):
            if answer.status >= 400:
                text = (await answer.text())[:300]
                return "", 0, (time.monotonic() - began) * 1000, f"HTTP {answer.status}: {text}"
            data = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return "", 0, (time.monotonic() - began) * 1000, f"{type(exc).__name__}: {exc}"[:300]
    latency = (time.monotonic() - began) * 1000
    choice = (data.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
    tokens = int((data.get("usage") or {}).get("completion_tokens") or len(text.split()))
    return str(text), tokens, latency, ""


def run_suite(job_id: int, owner: str | None = None) -> str:
    owner = owner or worker_id()
    job = job_services.claim(job_id, owner)
    if job is None:
        return "skipped"
    run = SuiteRun.objects.filter(job_id=job_id).first()
    if run is None:
        job_services.finish(job_id, owner, outcome="failed", error="Its run row is gone.")
        return "failed"
    progress = Progress(job_id, owner)
    results: list[dict[str, Any]] = []
    total = len(run.cases) * len(run.targets)
    done = 0
    outcome, error = "succeeded", ""
    try:
        with gateway_key(run, total * 120 + 300) as secret:
            check_targets(run)
            for t in run.targets:
                entry: dict[str, Any] = {"target": t["label"], "cases": []}
                results.append(entry)
                for case in run.cases:
                    progress.send(
                        {
                            "stage": f"{case['name']} on {t['label']}",
                            "cases_done": done,
                            "cases_total": total,
                            "percent": round(100.0 * done / total, 1),
                        }
                    )
                    text, tokens, latency, failure = asyncio.run(
                        ask(_target(t, secret), case, 120.0)
                    )
                    if failure:
                        check_targets(run)
                        verdict = suites.Verdict(False, f"no answer: {failure}")
                    else:
                        verdict = suites.judge(
                            case["check"], text, tokens=tokens, latency_ms=latency
                        )
                    entry["cases"].append(
                        {
                            "name": case["name"],
                            "passed": verdict.passed,
                            "why": verdict.why,
                            "answer": text[:2000],
                            "tokens": tokens,
                            "latency_ms": round(latency, 1),
                            "error": failure,
                        }
                    )
                    done += 1
                passed = sum(1 for c in entry["cases"] if c["passed"])
                entry.update(
                    passed=passed,
                    failed=len(entry["cases"]) - passed,
                    pass_rate=round(passed / len(entry["cases"]), 4) if entry["cases"] else 0.0,
                )
                SuiteRun.objects.filter(pk=run.pk).update(results=results)
                progress.note(f"{t['label']}: {passed} of {len(entry['cases'])} cases passed")
    except Stop as stop_:
        outcome, error = stop_.outcome, stop_.message
    except LeaseLost:
        return "lost"
    except Exception as exc:
        log.exception("suite job %s failed", job_id)
        outcome, error = "failed", f"Unexpected error in the control worker: {exc!r}"
    SuiteRun.objects.filter(pk=run.pk).update(results=results)
    job_services.finish(
        job_id,
        owner,
        outcome=outcome,
        error=error,
        result={"run": run.pk, "pass_rates": {r["target"]: r.get("pass_rate") for r in results}},
        progress={
            "stage": "done" if outcome == "succeeded" else outcome,
            "cases_done": done,
            "cases_total": total,
            "percent": 100.0 if outcome == "succeeded" else None,
        },
        log_text="\n".join(progress.lines),
    )
    return outcome
