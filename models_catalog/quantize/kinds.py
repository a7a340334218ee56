"""The ``quantize`` job kind: what the agent is told, the result checked, outputs registered.

Registration happens only when the job succeeds, inside the transaction that finishes it, and
only from files the control plane verified into the fleet store itself (the upload endpoint
checks size and sha256): a failed, cancelled or half-done job registers nothing.
"""

from __future__ import annotations

import re
from typing import Any

from core import job_services
from core.errors import ConflictError, ServiceError
from core.history import ChangeContext, record
from core.jobs import Job, JobKind, JobState
from models_catalog import downloads
from models_catalog.mirror import protocol
from models_catalog.models import ModelFile, StoredBlob, Variant, VariantEvaluation
from models_catalog.quantize import levels as lv
from models_catalog.quantize.planning import OUTPUT_DIR
from models_catalog.quantize.services import DEFAULT_EVAL_TOKENS, eval_text
from models_catalog.variants import actual_bpw, nominal_bpw, weights_bytes

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
EVAL_PROMPT = "The harbour woke before the sun."
EVAL_DETAILS = (
    "tokens",
    "text",
    "seconds",
    "opset",
    "chunks",
    "chunks_total",
    "prompt_tokens_per_s",
)


def source_of(job: Job) -> Variant:
    variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
    if variant is None:
        raise ServiceError(f"The source variant of job #{job.pk} was deleted from the catalog.")
    return variant


def _planned_paths(job: Job) -> dict[str, str]:
    outputs = (job.params or {}).get("outputs") or {}
    return {str(level): str(out.get("path") or "") for level, out in outputs.items()}


class QuantizeKind(job_services.JobKindHandler):
    kind = JobKind.QUANTIZE

    def dispatch(self, job: Job) -> None:
        assert job.node is not None
        downloads._send("fleet.agent.quantize", job, job.node.queue, self.message_expires())

    def agent_spec(self, job: Job) -> dict[str, Any]:
        variant = source_of(job)
        model = variant.model
        params = job.params or {}
        text, text_sha = eval_text()
        return {
            "job": job.pk,
            "kind": job.kind,
            "node": job.node.name if job.node else "",
            "format": params.get("format"),
            "levels": params.get("levels") or [],
            "imatrix": bool(params.get("imatrix")),
            "imatrix_levels": params.get("imatrix_levels") or [],
            "outputs": params.get("outputs") or {},
            "work_bytes": params.get("work_bytes") or 0,
            "output_prefix": OUTPUT_DIR,
            "limits": {"threads": params.get("threads"), "memory_mb": params.get("memory_mb")},
            "evaluation": {
                "enabled": bool(params.get("evaluate", True)),
                "text": text,
                "text_sha256": text_sha,
                "prompt": EVAL_PROMPT,
                "tokens": DEFAULT_EVAL_TOKENS,
                "context": params.get("ppl_context") or 128,
            },
            "progress_interval_s": downloads.PROGRESS_INTERVAL_S,
            "source": {
                "name": variant.name,
                "format": variant.format,
                "quantization": variant.quantization,
                "source": downloads.SOURCE_MIRROR,
                "repo_id": model.repo_id,
                "commit": model.commit_sha,
                "revision": model.requested_revision,
                "files": [
                    {"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id}
                    for f in downloads.variant_files(variant)
                ],
                "endpoint": None,  # the fleet mirror on the agent's own server
                "token": None,
            },
        }

    def check_result(self, job: Job, result: dict[str, Any]) -> str:
        """Every asked level made, every file verified in the store, at its planned path."""
        variant = Variant.objects.filter(pk=job.target_id).first()
        if variant is None:
            return f"{job.target_name} was deleted from the catalog meanwhile; nothing registered."
        planned = _planned_paths(job)
        outputs = {
            str(o.get("level")): o for o in result.get("outputs") or [] if isinstance(o, dict)
        }
        fmt = (job.params or {}).get("format")
        for level, path in planned.items():
            output = outputs.get(level)
            if output is None:
                return f"The agent reported no {level} output; nothing registered. Retry the job."
            files = [f for f in output.get("files") or [] if isinstance(f, dict)]
            if not files:
                return f"The {level} output has no files; nothing registered."
            for f in files:
                sha, size, where = (
                    str(f.get("sha256", "")),
                    int(f.get("size") or 0),
                    str(f.get("path")),
                )
                inside = where == path if fmt == lv.FORMAT_GGUF else where.startswith(path + "/")
                if not inside or ".." in where.split("/"):
                    return f"The agent reported {where!r} for {level}, expected under {path!r}."
                if (
                    not _SHA256.match(sha)
                    or not StoredBlob.objects.filter(sha256=sha, size=size).exists()
                ):
                    return (
                        f"{where} (sha256 {sha[:16]}…) is not in the fleet store; the upload did "
                        "not complete. Nothing registered; retry the job."
                    )
                clash = (
                    ModelFile.objects.filter(model_id=variant.model_id, path=where)
                    .exclude(sha256=sha)
                    .first()
                )
                if clash is not None:
                    return f"The model already has a different file at {where}; nothing registered."
        return ""

    def on_retry(self, ctx: ChangeContext, job: Job) -> None:
        """A retried job waits again for the source to be in the fleet store if it is not."""
        variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
        if variant is None or job.node is None:
            raise ConflictError(f"{job.target_name} is no longer in the catalog; cannot retry.")
        cache_job = downloads.ensure_cached(ctx, variant)
        if cache_job is not None:
            job.params = {**job.params, job_services.AFTER_JOB: cache_job.pk}

    def on_finished(self, job: Job, ctx: ChangeContext) -> None:
        if job.state != JobState.SUCCEEDED:
            return
        variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
        result = job.result or {}
        if variant is None or not result.get("outputs"):
            return
        planned = _planned_paths(job)
        registered = {}
        for output in result["outputs"]:
            if str(output.get("level")) not in planned:  # only what was asked and checked
                continue
            made = register_output(ctx, job, variant, output, result)
            registered[str(output.get("level"))] = made.pk
        job.result = {**result, "variants": registered}
        job.save(update_fields=["result"])


def register_output(
    ctx: ChangeContext, job: Job, source: Variant, output: dict[str, Any], result: dict[str, Any]
) -> Variant:
    """One output as a catalog variant with lineage, footprint inputs and its evaluation."""
    model = source.model
    params = job.params or {}
    fmt = str(params.get("format"))
    level = str(output["level"])
    planned = (params.get("outputs") or {}).get(level) or {}
    name = str(planned.get("name") or output.get("name") or level)
    existing = Variant.objects.filter(model=model, name=name).first()
    if existing is not None:  # a concurrent job made it: keep the first
        return existing
    rows = []
    for f in output["files"]:
        row, _created = ModelFile.objects.get_or_create(
            model=model,
            path=f["path"],
            defaults={
                "size": int(f["size"]),
                "sha256": f["sha256"],
                "lfs": protocol.is_lfs(f["path"], int(f["size"])),
            },
        )
        rows.append(row)
    quantization = level if fmt == lv.FORMAT_GGUF else level.lower()
    bpw = actual_bpw(weights_bytes(rows), model.parameter_count or params.get("parameters"))
    evaluation = dict(output.get("evaluation") or {})
    lineage = {
        "source": "quantize",
        "job": job.pk,
        "parent": source.name,
        "parent_id": source.pk,
        "tool": output.get("tool"),
        "tool_version": output.get("tool_version"),
        "parameters": output.get("params") or {},
        "sha256": output.get("sha256"),
        "size": output.get("size"),
        "node": result.get("node") or (job.node.name if job.node else ""),
        "duration_s": output.get("duration_s"),
        "quantize_s": output.get("quantize_s"),
    }
    if fmt == lv.FORMAT_ONNX:
        lineage["opset"] = output.get("opset")
        lineage["onnxruntime"] = output.get("tool_version")
    variant = Variant.objects.create(
        model=model,
        name=name,
        format=fmt,
        quantization=quantization,
        bits_per_weight=bpw or nominal_bpw(fmt, quantization),
        size=sum(r.size for r in rows),
        parent=source,
        produced_by=lineage,
    )
    variant.files.set(rows)
    baseline = result.get("baseline") or {}
    VariantEvaluation.objects.create(
        variant=variant,
        job=job,
        node=job.node,
        node_name=str(lineage["node"] or ""),
        perplexity=evaluation.get("perplexity"),
        perplexity_stderr=evaluation.get("perplexity_stderr"),
        baseline_name=str(baseline.get("name") or ""),
        baseline_perplexity=baseline.get("perplexity"),
        context=evaluation.get("context"),
        text_sha256=str(evaluation.get("text_sha256") or ""),
        tokens_per_second=evaluation.get("tokens_per_s"),
        smoke_ok=evaluation.get("loads") if fmt == lv.FORMAT_ONNX else None,
        details={k: v for k, v in evaluation.items() if k in EVAL_DETAILS},
    )
    record(
        ctx,
        "created",
        variant,
        changes={
            "parent": {"before": None, "after": source.name},
            "quantization": {"before": None, "after": quantization},
            "sha256": {"before": None, "after": output.get("sha256")},
        },
    )
    return variant
