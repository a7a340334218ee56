"""Permission-matrix rows for quantization (tests/matrix_kit.py).

Operators ask for quantizations (API and page); everyone signed in reads the variants
comparison; the upload endpoint takes node credentials only, so people are refused.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from core.jobs import Job, JobKind
from fleet.choices import NodeState
from fleet.models import Node
from tests.matrix_kit import Redirect, api, everyone, operators, page

GB = 10**9


def setup(world: Any) -> None:
    node = Node.objects.create(
        name="matrix-quantizer",
        state=NodeState.READY,
        last_heartbeat_at=timezone.now(),
        credential_prefix="slmn_q",
        credential_hash=f"matrix-quantizer-{uuid.uuid4().hex}",
        inventory={
            "memory": {"total_bytes": 64 * GB, "available_bytes": 64 * GB},
            "disk": {"path": "/data", "total_bytes": 500 * GB, "free_bytes": 500 * GB},
        },
    )
    world.extra["quantize_node"] = node


def placeholders(world: Any, persona: str) -> dict[str, Any]:
    node = world.extra["quantize_node"]
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now())
    return {"quantize_node": node.pk, "quantize_sha": "0" * 64}


def quantize_job_made(response: Any, persona: str, world: Any) -> None:
    made = Job.objects.filter(kind=JobKind.QUANTIZE, target_id=str(world.variant.pk)).exists()
    accepted = response.status_code == 202 or (
        response.status_code == 302 and response["Location"].startswith("/jobs/")
    )
    assert made == accepted


BODY = {
    "variant": "{variant}",
    "format": "gguf",
    "levels": ["Q8_0"],
    "node": "{quantize_node}",
}

ROWS = [
    api(
        "quantize-create",
        "quantize",
        "POST",
        "/api/v1/quantize/",
        **operators(202),
        body=BODY,
        check=quantize_job_made,
    ),
    api(
        "quantize-comparison",
        "quantize-comparison",
        "GET",
        "/api/v1/quantize/comparison/{catalog_model}/",
        **everyone(200),
    ),
    api(
        "agent-job-output",
        "agent-job-output",
        "GET",
        "/api/v1/agent/jobs/{job}/outputs/{quantize_sha}/",
        **everyone(401),
    ),
    page(
        "catalog-quantize",
        "catalog-quantize",
        "GET",
        "/catalog/{catalog_model}/quantize/",
        **operators(200),
    ),
    page(
        "catalog-quantize-submit",
        "catalog-quantize",
        "POST",
        "/catalog/{catalog_model}/quantize/",
        **operators(Redirect("/jobs/")),
        body={**BODY, "levels": "Q8_0", "evaluate": "on", "ppl_context": "128"},
        check=quantize_job_made,
    ),
    page(
        "catalog-quantize-comparison",
        "catalog-quantize-comparison",
        "GET",
        "/catalog/{catalog_model}/variants/comparison/",
        **everyone(200),
    ),
]
