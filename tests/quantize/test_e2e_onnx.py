"""End to end: a real agent exports the tiny Llama to ONNX and quantizes it with ONNX Runtime
(int8 dynamic, int4 MatMul n-bits); the int8 output, read back from the fleet store, loads in
ONNX Runtime and generates."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from core.jobs import JobState
from models_catalog import store
from models_catalog.models import Variant, VariantEvaluation
from models_catalog.quantize.services import request_quantization
from tests.deployments import e2e
from tests.downloads_support import wait_job
from tests.quantize.conftest import publish_source, start_quantizer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def test_onnx_int8_and_int4_registered_and_int8_generates(
    stage: e2e.Stage, quantize_model_dir: Path, tmp_path: Path
):
    runner, ctx = stage.runner, stage.ctx
    source = publish_source(stage.hub_root, ctx, quantize_model_dir)
    _, node = start_quantizer(runner, f"qzo-{uuid.uuid4().hex[:6]}", tools=None)

    job = request_quantization(ctx, source, fmt="onnx", levels=["int8", "INT4"], threads=2)
    job = wait_job(job.pk, 300, message=runner.tails)
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-3000:]}"

    outputs = {v.quantization: v for v in Variant.objects.filter(parent=source)}
    assert set(outputs) == {"int8", "int4"}
    for level, variant in outputs.items():
        assert variant.format == "onnx" and variant.name == f"onnx-{level}"
        lineage = variant.produced_by
        assert (
            lineage["tool"] == "onnxruntime" and lineage["onnxruntime"] == onnxruntime.__version__
        )
        assert lineage["opset"] and lineage["opset"] >= 17
        assert lineage["parameters"]["export"]["opset"] == lineage["opset"]
        paths = sorted(f.path for f in variant.files.all())
        assert f"quantized/onnx-{level}/model.onnx" in paths
        assert f"quantized/onnx-{level}/tokenizer.model" in paths
        evaluation = VariantEvaluation.objects.get(variant=variant)
        assert evaluation.smoke_ok is True and evaluation.tokens_per_second > 0
        assert evaluation.details["tokens"] > 0 and evaluation.node_name == node.name
    assert outputs["int8"].produced_by["parameters"]["weight_type"] == "QInt8"
    assert outputs["int4"].produced_by["parameters"]["bits"] == 4
    assert outputs["int4"].size < source.size and outputs["int8"].size < source.size

    # The int8 output, as the fleet store holds it, loads in ONNX Runtime and generates.
    folder = tmp_path / "int8"
    folder.mkdir()
    for row in outputs["int8"].files.all():
        shutil.copyfile(store.blob_path(row.sha256), folder / Path(row.path).name)
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    ids = [1, 45, 67, 89]
    for _ in range(4):
        batch = np.array([ids], dtype=np.int64)
        (logits,) = session.run(
            ["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        )
        assert logits.shape[:2] == (1, len(ids)) and np.isfinite(logits).all()
        ids.append(int(np.argmax(logits[0, -1])))
    assert len(ids) == 8
