"""Quantize API: ask for quantized variants, compare a model's variants, agents' uploads.

- ``POST /api/v1/quantize/`` ``{variant, format, levels, node?, imatrix, evaluate, threads,
  memory_mb, ppl_context, reason}`` → the quantize job (202); bad input answers 400 with
  the field and what to do, and nothing is created;
- ``GET /api/v1/quantize/comparison/<model id>/``: the model's variants side by side (size,
  bpw, perplexity and its delta to F16, tokens/s, fits-on count);
- ``GET|PUT /api/v1/agent/jobs/<job id>/outputs/<sha256>/`` (node credential): whether the
  store has a blob / stream one in (checked for size and sha256 before it enters the store).
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.base import FleetViewSetMixin, ReasonField, validated_data
from core.api.jobs import JobSerializer
from core.choices import Role
from core.jobs import Job, JobKind, JobState
from fleet.authentication import IsNode, NodeCredentialAuthentication
from fleet.models import Node
from models_catalog import store
from models_catalog.models import CatalogModel, Variant
from models_catalog.quantize import levels as lv
from models_catalog.quantize.comparison import comparison
from models_catalog.quantize.services import DEFAULT_PPL_CONTEXT, request_quantization

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_CHUNK = 1024 * 1024


class QuantizeRequestSerializer(serializers.Serializer[Any]):
    variant = serializers.PrimaryKeyRelatedField(
        queryset=Variant.objects.select_related("model"),
        help_text="The source variant: original safetensors weights, or a GGUF to re-quantize.",
    )
    format = serializers.ChoiceField(choices=lv.FORMATS)
    levels = serializers.ListField(
        child=serializers.CharField(max_length=16),
        allow_empty=False,
        max_length=len(lv.GGUF_LEVELS),
        help_text="GGUF: llama-quantize types (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, …); "
        "ONNX: int8, int4.",
    )
    node = serializers.PrimaryKeyRelatedField(
        queryset=Node.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="Where to run; left out: the ready node with the most free disk that has "
        "enough RAM and disk.",
    )
    imatrix = serializers.BooleanField(
        default=False, help_text="GGUF: an importance matrix for the low-bit types."
    )
    evaluate = serializers.BooleanField(
        default=True, help_text="GGUF: perplexity and tokens/s after each output."
    )
    threads = serializers.IntegerField(required=False, allow_null=True, default=None)
    memory_mb = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Address-space limit of each tool process, in MB.",
    )
    ppl_context = serializers.IntegerField(
        default=DEFAULT_PPL_CONTEXT, min_value=16, max_value=8192
    )
    reason = ReasonField()


class QuantizeView(FleetViewSetMixin, APIView):
    """Quantize a variant into new catalog variants (one job on one node)."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    @extend_schema(
        request=QuantizeRequestSerializer,
        responses={202: JobSerializer},
        summary="Quantize a variant (GGUF via llama.cpp, ONNX Runtime int8/int4)",
    )
    def post(self, request: Request) -> Response:
        data = validated_data(QuantizeRequestSerializer, request)
        ctx = self.change_context(data.pop("reason", ""))
        job = request_quantization(
            ctx,
            data["variant"],
            fmt=data["format"],
            levels=data["levels"],
            node=data["node"],
            imatrix=data["imatrix"],
            evaluate=data["evaluate"],
            threads=data["threads"],
            memory_mb=data["memory_mb"],
            ppl_context=data["ppl_context"],
        )
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ComparisonView(FleetViewSetMixin, APIView):
    """A model's variants side by side, for picking the right trade-off."""

    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(responses={200: dict}, summary="Compare a model's variants")
    def get(self, request: Request, pk: int) -> Response:
        model = get_object_or_404(CatalogModel, pk=pk)
        return Response(comparison(model))


OutputAnswer = inline_serializer(
    "QuantizeOutputStored",
    {"stored": serializers.BooleanField(), "sha256": serializers.CharField()},
)


class AgentOutputView(APIView):
    """An agent's upload of a quantize output into the fleet store (node credential)."""

    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNode]

    def _job(self, request: Request, pk: int) -> Job | Response:
        node = request.auth
        assert isinstance(node, Node)
        job = Job.objects.filter(pk=pk, node=node, kind=JobKind.QUANTIZE).first()
        if job is None:
            return Response(
                {"detail": "No such quantize job for this node.", "code": "not_found"},
                status=status.HTTP_404_NOT_FOUND,
            )
        return job

    @extend_schema(request=None, responses={200: OutputAnswer, 404: dict})
    def get(self, request: Request, pk: int, sha256: str) -> Response:
        job = self._job(request, pk)
        if isinstance(job, Response):
            return job
        if not _SHA256.match(sha256):
            return Response({"detail": "Not a sha256.", "code": "bad_sha256"}, status=400)
        return Response({"stored": store.has_blob(sha256), "sha256": sha256})

    @extend_schema(
        request={"application/octet-stream": bytes},
        responses={
            201: OutputAnswer,
            400: OpenApiResponse(description="size or sha256 differs"),
            409: OpenApiResponse(description="this node no longer holds the job"),
            507: OpenApiResponse(description="the store's disk is too full"),
        },
    )
    def put(self, request: Request, pk: int, sha256: str) -> Response:
        job = self._job(request, pk)
        if isinstance(job, Response):
            return job
        node = request.auth
        assert isinstance(node, Node)
        if job.state != JobState.RUNNING or job.lease_owner != node.name:
            return Response(
                {
                    "detail": f"Job #{pk} is {job.state}; this node does not hold it.",
                    "code": "lease_lost",
                },
                status=status.HTTP_409_CONFLICT,
            )
        if not _SHA256.match(sha256):
            return Response({"detail": "Not a sha256.", "code": "bad_sha256"}, status=400)
        try:
            size = int(request.headers.get("Content-Length") or "")
        except ValueError:
            return Response(
                {"detail": "Content-Length is required.", "code": "no_length"}, status=411
            )
        if store.has_blob(sha256):
            _drain(request, size)
            return Response({"stored": True, "sha256": sha256}, status=status.HTTP_200_OK)
        free = store.free_bytes()
        if size > free:
            return Response(
                {
                    "detail": f"The fleet store has {free} bytes free, the output is {size}. Free "
                    "space in the store and retry the job.",
                    "code": "store_full",
                },
                status=507,
            )
        incoming = store.incoming_dir() / f"{sha256}.job{job.pk}.part"
        raw = request._request  # the body, unread: streamed to disk in chunks
        received = 0
        try:
            with incoming.open("wb") as handle:
                while received < size:
                    chunk = raw.read(min(UPLOAD_CHUNK, size - received))
                    if not chunk:
                        break
                    handle.write(chunk)
                    received += len(chunk)
            if received != size:
                raise store.StoreError(f"received {received} of {size} bytes")
            store.ingest_file(incoming, expected_sha256=sha256, expected_size=size)
        except store.StoreError as exc:
            return Response(
                {"detail": f"The upload was refused: {exc}.", "code": "checksum"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        finally:
            if incoming.exists():
                os.unlink(incoming)
        return Response({"stored": True, "sha256": sha256}, status=status.HTTP_201_CREATED)


def _drain(request: Request, size: int) -> None:
    raw = request._request
    left = size
    while left > 0:
        chunk = raw.read(min(UPLOAD_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
