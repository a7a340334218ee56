"""The ``test_suite`` job on the control worker: each case on each target, judged."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from benchmarks import loadgen, suites
from benchmarks.models import SuiteRun
from benchmarks.run_support import (
    LeaseLost,
    Progress,
    Stop,
    check_targets,
    gateway_key,
    target_of,
    worker_id,
)
from core import job_services

log = logging.getLogger(__name__)


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
                        ask(target_of(t, secret), case, 120.0)
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
