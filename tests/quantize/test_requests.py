"""Asking for a quantization: bad input is a clear error with nothing created; a good request
is one job on a node with room, waiting for the source to reach the fleet store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from core.errors import ServiceError
from core.history import ChangeContext
from core.jobs import Job, JobKind, JobState
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.models import CatalogModel, ModelFile, Variant
from models_catalog.quantize import planning
from models_catalog.quantize.services import request_quantization
from tests.downloads_support import variant_with
from tests.hubserver.fixtures import MIRROR_COMMIT, catalog_tiny_model

pytestmark = pytest.mark.django_db
GB = 10**9


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


@pytest.fixture
def source(fleet_store: Path, tiny_model_dir: Path) -> Variant:
    model = catalog_tiny_model(tiny_model_dir, MIRROR_COMMIT, ingest=False)
    model.parameter_count = 1_000_000
    model.save(update_fields=["parameter_count"])
    paths = list(model.files.values_list("path", flat=True))
    return variant_with(model, "original", paths)


def node(name: str, *, disk_gb: float = 100, ram_gb: float = 16, **flags: Any) -> Node:
    return Node.objects.create(
        name=name,
        state=NodeState.READY,
        last_heartbeat_at=timezone.now(),
        credential_prefix="slmn_x",
        credential_hash=f"hash-{name}-{uuid.uuid4().hex}",
        inventory={
            "memory": {"total_bytes": int(ram_gb * GB), "available_bytes": int(ram_gb * GB)},
            "disk": {
                "path": "/data",
                "total_bytes": int(disk_gb * GB),
                "free_bytes": int(disk_gb * GB),
            },
        },
        **flags,
    )


def gguf_variant(model: CatalogModel, quant: str) -> Variant:
    row = ModelFile.objects.create(
        model=model, path=f"m-{quant}.gguf", size=600_000, sha256="ab" * 32, lfs=True
    )
    variant = Variant.objects.create(
        model=model, name=f"m-{quant}", format="gguf", quantization=quant, size=row.size
    )
    variant.files.set([row])
    return variant


def refused(ctx: ChangeContext, variant: Variant, field: str, **kwargs: Any) -> str:
    before = Job.objects.count()
    with pytest.raises(ServiceError) as caught:
        request_quantization(ctx, variant, **kwargs)
    assert caught.value.field == field, caught.value.message
    assert Job.objects.count() == before  # nothing created
    return caught.value.message


def test_unknown_type_is_refused_with_the_known_ones(ctx, source):
    node("n1")
    message = refused(ctx, source, "levels", fmt="gguf", levels=["Q4_K_M", "Q9_X"])
    assert "'Q9_X' is not a GGUF quantization type" in message and "Q5_K_M" in message
    assert "int8" in refused(ctx, source, "levels", fmt="onnx", levels=["Q8_0"])
    assert "Unknown target format" in refused(ctx, source, "format", fmt="exl2", levels=["x"])


def test_source_already_at_lower_precision_is_refused(ctx, source):
    node("n1")
    q4 = gguf_variant(source.model, "Q4_K_M")
    message = refused(ctx, q4, "levels", fmt="gguf", levels=["Q8_0"])
    assert "already quantized to Q4_K_M" in message and "original weights" in message
    refused(ctx, q4, "levels", fmt="gguf", levels=["Q4_K_M"])
    assert "ONNX outputs are exported" in refused(ctx, q4, "variant", fmt="onnx", levels=["int8"])
    # a lower level from a GGUF is a re-quantization: allowed
    job = request_quantization(ctx, q4, fmt="gguf", levels=["Q3_K_M"])
    assert job.params["outputs"]["Q3_K_M"]["name"].endswith("-Q3_K_M-from-Q4_K_M")


def test_unsupported_architecture_is_refused_before_any_job(ctx, source):
    node("n1")
    CatalogModel.objects.filter(pk=source.model_id).update(architecture="FancyNewForCausalLM")
    source.refresh_from_db()
    message = refused(ctx, source, "variant", fmt="gguf", levels=["Q8_0"])
    assert "FancyNewForCausalLM" in message and "converter" in message
    CatalogModel.objects.filter(pk=source.model_id).update(architecture="BertForMaskedLM")
    source.refresh_from_db()
    assert "causal language" in refused(ctx, source, "variant", fmt="onnx", levels=["int8"])


def test_insufficient_disk_and_bad_limits_are_refused(ctx, source):
    small = node("small", disk_gb=0.000_001)
    message = refused(ctx, source, "node", fmt="gguf", levels=["Q8_0"])
    assert "No node can run this job" in message and "free disk" in message
    assert "Cannot quantize on small" in refused(
        ctx, source, "node", fmt="gguf", levels=["Q8_0"], node=small
    )
    node("big")
    assert "threads" in refused(ctx, source, "threads", fmt="gguf", levels=["Q8_0"], threads=0)
    refused(ctx, source, "memory_mb", fmt="gguf", levels=["Q8_0"], memory_mb=10)
    assert "importance matrix" in refused(ctx, source, "levels", fmt="gguf", levels=["IQ2_XXS"])


def test_a_request_is_one_job_on_the_roomiest_node_after_caching(ctx, source):
    node("tight", disk_gb=0.02)
    roomy = node("roomy", disk_gb=50)
    node("cordoned", disk_gb=500, cordoned=True)
    job = request_quantization(
        ctx, source, fmt="gguf", levels=["q8_0", "Q4_K"], imatrix=True, threads=3, memory_mb=2048
    )
    assert job.kind == JobKind.QUANTIZE and job.node_id == roomy.pk
    assert job.state == JobState.QUEUED
    assert job.params["levels"] == ["Q8_0", "Q4_K_M"]  # canonical names, alias resolved
    assert job.params["imatrix_levels"] == ["Q4_K_M"]
    outputs = job.params["outputs"]
    short = source.model.repo_id.rsplit("/", 1)[1]
    assert outputs["Q8_0"] == {
        "name": f"{short}-Q8_0",
        "path": f"quantized/{short}-Q8_0.gguf",
        "expected_bytes": 1_062_500,
    }
    assert outputs["Q4_K_M"]["name"] == f"{short}-Q4_K_M-imatrix"
    # the source is not in the fleet store yet: the job waits for the cache job
    cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    assert job.params["after_job"] == cache.pk
    # the same request while it is under way: the same job
    again = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0", "Q4_K_M"], imatrix=True)
    assert again.pk == job.pk
    assert Job.objects.filter(kind=JobKind.QUANTIZE).count() == 1


def test_plan_sizes_the_work(source):
    plan = planning.plan(source, "onnx", ["int8", "int4"])
    assert plan.levels == ["int8", "int4"]
    assert plan.work_bytes == 4_000_000  # fp32 export of 1 M parameters
    assert plan.outputs["int8"]["path"] == "quantized/onnx-int8"
    assert plan.disk_bytes > plan.work_bytes


def test_api_quantize(api_client_for, source):
    node("n1")
    body = {"variant": source.pk, "format": "gguf", "levels": ["Q8_0"]}
    assert (
        api_client_for("viewer").post("/api/v1/quantize/", body, format="json").status_code == 403
    )
    bad = api_client_for("operator").post(
        "/api/v1/quantize/", {**body, "levels": ["Q7"]}, format="json"
    )
    assert bad.status_code == 400 and "Q7" in str(bad.json())
    assert not Job.objects.filter(kind=JobKind.QUANTIZE).exists()
    ok = api_client_for("operator").post("/api/v1/quantize/", body, format="json")
    assert ok.status_code == 202, ok.json()
    assert ok.json()["kind"] == "quantize" and ok.json()["state"] == "queued"
    gguf_variant(source.model, "Q8_0")
    table = api_client_for("viewer").get(f"/api/v1/quantize/comparison/{source.model_id}/")
    assert table.status_code == 200
    rows = {row["name"]: row for row in table.json()["variants"]}
    assert rows["original"]["perplexity"] is None
    assert rows["original"]["fits_on"] == 0  # safetensors is served by vLLM: no GPU here
    assert rows["m-Q8_0"]["fits_on"] == 1  # llama.cpp on the CPU node
    assert rows["m-Q8_0"]["bits_per_weight"] == 8.5


def test_quantize_page(client, operator_user, source):
    node("n1")
    client.force_login(operator_user)
    url = f"/catalog/{source.model_id}/quantize/"
    form = client.get(url)
    assert form.status_code == 200 and b"Start quantizing" in form.content
    bad = client.post(url, {"variant": source.pk, "format": "onnx", "levels": ["Q8_0"]})
    assert bad.status_code == 400
    assert b"is not a ONNX quantization type" in bad.content
    assert not Job.objects.filter(kind=JobKind.QUANTIZE).exists()
    good = client.post(
        url,
        {
            "variant": source.pk,
            "format": "gguf",
            "levels": ["Q8_0", "Q6_K"],
            "evaluate": "on",
            "ppl_context": "128",
        },
    )
    job = Job.objects.get(kind=JobKind.QUANTIZE)
    assert good.status_code == 302 and good["Location"] == f"/jobs/{job.pk}/"
    assert job.params["levels"] == ["Q8_0", "Q6_K"] and job.params["evaluate"] is True
    detail = client.get(f"/catalog/{source.model_id}/")
    assert b"Quantize" in detail.content and b"variants/comparison/" in detail.content


def test_retry_waits_for_the_source_again(ctx, source):
    from core import job_services

    node("n1")
    job = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0"])
    failed = job_services.finish(job.pk, None, outcome="failed", error="tool failed")
    assert failed is not None and failed.state == JobState.FAILED
    retried = job_services.retry(ctx, failed)
    assert retried.state == JobState.QUEUED and retried.attempts == 0
    cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    assert retried.params["after_job"] == cache.pk  # the source is still not in the store
    assert retried.params["levels"] == ["Q8_0"]
