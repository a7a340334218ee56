"""The use case: an operator asks for quantized variants of a catalog variant.

:func:`request_quantization` checks the request (``planning``), picks the node, and writes one
``quantize`` job on it — waiting for the cache job when the source's files are not all in the
fleet store yet, since the agent fetches the source from the fleet mirror. Levels whose output
variant exists already are reused, not made again; when nothing is left to make, the job
finishes at once. An identical request while a job for it is queued or running returns that job.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from django.db import transaction

from core import job_services
from core.history import ChangeContext
from core.jobs import Job, JobKind, JobState
from fleet.models import Node
from models_catalog import downloads
from models_catalog.models import Variant
from models_catalog.quantize import planning

EVAL_TEXT = Path(__file__).resolve().parent / "data" / "eval.txt"
DEFAULT_PPL_CONTEXT = 128
DEFAULT_EVAL_TOKENS = 32


@cache
def eval_text() -> tuple[str, str]:
    """The shipped perplexity text and its sha256 (recorded with every evaluation)."""
    text = EVAL_TEXT.read_text(encoding="utf-8")
    return text, hashlib.sha256(text.encode()).hexdigest()


def _same_request(job: Job, params: dict[str, Any]) -> bool:
    keys = ("format", "levels", "imatrix", "evaluate")
    return all((job.params or {}).get(k) == params[k] for k in keys)


@transaction.atomic
def request_quantization(
    ctx: ChangeContext,
    variant: Variant,
    *,
    fmt: str,
    levels: list[str],
    node: Node | None = None,
    imatrix: bool = False,
    evaluate: bool = True,
    threads: int | None = None,
    memory_mb: int | None = None,
    ppl_context: int = DEFAULT_PPL_CONTEXT,
) -> Job:
    """One quantize job (reusing outputs that exist and an identical job under way)."""
    variant = Variant.objects.select_for_update().select_related("model").get(pk=variant.pk)
    planning.check_limits(threads, memory_mb)
    plan = planning.plan(variant, fmt, levels, imatrix=imatrix)
    params: dict[str, Any] = {
        "variant": variant.pk,
        "model": variant.model_id,
        "format": plan.fmt,
        "levels": plan.levels,
        "requested_levels": [*plan.levels, *plan.reused],
        "reused": {level: v.pk for level, v in plan.reused.items()},
        "imatrix": imatrix,
        "imatrix_levels": plan.imatrix_levels,
        "evaluate": evaluate,
        "threads": threads,
        "memory_mb": memory_mb,
        "ppl_context": ppl_context,
        "outputs": plan.outputs,
        "work_bytes": plan.work_bytes,
        "disk_bytes": plan.disk_bytes,
        "ram_bytes": plan.ram_bytes,
        "parameters": plan.parameters,
    }
    under_way = Job.objects.filter(
        kind=JobKind.QUANTIZE,
        target_type=downloads.VARIANT_TARGET,
        target_id=str(variant.pk),
        state__in=(JobState.QUEUED, JobState.RUNNING),
    ).order_by("created_at")
    for job in under_way:
        if _same_request(job, params):
            return job
    if not plan.levels:
        job = job_services.create_job(
            ctx,
            kind=JobKind.QUANTIZE,
            target_type=downloads.VARIANT_TARGET,
            target_id=variant.pk,
            target_name=str(variant),
            node=node,
            params=params,
            max_attempts=3,
        )
        names = ", ".join(v.name for v in plan.reused.values())
        return job_services.complete_at_once(
            ctx,
            job,
            result={"outputs": [], "reused": {k: v.pk for k, v in plan.reused.items()}},
            note=f"every output exists already ({names}); reused",
        )
    chosen = planning.pick_node(plan, node)
    after = downloads.ensure_cached(ctx, variant)
    return job_services.create_job(
        ctx,
        kind=JobKind.QUANTIZE,
        target_type=downloads.VARIANT_TARGET,
        target_id=variant.pk,
        target_name=f"{variant} → {plan.fmt} {', '.join(plan.levels)}",
        node=chosen,
        params=params,
        max_attempts=3,
        after=after,
    )
