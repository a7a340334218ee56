"""Agent endpoints for jobs: claim, progress (renews the lease, answers cancel), finish.

Node credential only, and a node sees only its own jobs: a job of another node answers 404.
The lease owner of a node's job is the node's name.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import job_services
from core.errors import ServiceError
from core.jobs import Job
from fleet.authentication import IsNode, NodeCredentialAuthentication
from fleet.models import Node

OUTCOMES = ("succeeded", "failed", "cancelled")


class JobProgressSerializer(serializers.Serializer[Any]):
    progress = serializers.DictField(required=False, default=dict)
    log = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)


class JobFinishSerializer(serializers.Serializer[Any]):
    outcome = serializers.ChoiceField(choices=OUTCOMES)
    result = serializers.DictField(required=False, allow_null=True, default=None)
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=8000)
    retryable = serializers.BooleanField(required=False, default=False)
    code = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    progress = serializers.DictField(required=False, allow_null=True, default=None)
    log = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)


ProgressAnswerSerializer = inline_serializer(
    "JobProgressAnswer",
    {
        "keep_going": serializers.BooleanField(),
        "cancel_requested": serializers.BooleanField(),
        "state": serializers.CharField(),
    },
)


class _AgentJobView(APIView):
    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNode]

    def node(self, request: Request) -> Node:
        node = request.auth
        assert isinstance(node, Node)
        return node

    def own_job(self, request: Request, pk: int) -> Job | Response:
        job = Job.objects.filter(pk=pk, node=self.node(request)).first()
        if job is None:
            return Response(
                {"detail": "No such job for this node.", "code": "not_found"},
                status=status.HTTP_404_NOT_FOUND,
            )
        return job


class AgentJobClaimView(_AgentJobView):
    """Take a queued job under a lease; the answer says what to do (409: not claimable)."""

    @extend_schema(request=None, responses={200: dict, 409: dict})
    def post(self, request: Request, pk: int) -> Response:
        job = self.own_job(request, pk)
        if isinstance(job, Response):
            return job
        node = self.node(request)
        claimed = job_services.claim(pk, node.name, node_id=node.pk)
        if claimed is None:
            job.refresh_from_db()
            return Response(
                {
                    "detail": f"Job #{pk} is {job.state} and cannot be claimed now.",
                    "code": "not_claimable",
                    "state": job.state,
                },
                status=status.HTTP_409_CONFLICT,
            )
        handler = job_services.handler_for(claimed.kind)
        spec_of = getattr(handler, "agent_spec", None)
        if spec_of is None:
            job_services.finish(
                pk, node.name, outcome="failed", error=f"Agents cannot run {claimed.kind} jobs."
            )
            return Response(
                {"detail": "Not an agent job.", "code": "not_claimable"},
                status=status.HTTP_409_CONFLICT,
            )
        try:
            spec = spec_of(claimed)
        except ServiceError as error:
            job_services.finish(pk, node.name, outcome="failed", error=error.message)
            return Response(
                {"detail": error.message, "code": "not_claimable", "state": "failed"},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(spec)


class AgentJobProgressView(_AgentJobView):
    """Progress of a running job; renews the lease. The answer says whether to go on."""

    @extend_schema(request=JobProgressSerializer, responses=ProgressAnswerSerializer)
    def post(self, request: Request, pk: int) -> Response:
        serializer = JobProgressSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = self.own_job(request, pk)
        if isinstance(job, Response):
            return job
        node = self.node(request)
        answer = job_services.report_progress(
            pk,
            node.name,
            _clean_progress(serializer.validated_data["progress"]),
            log_text=serializer.validated_data["log"],
            node_id=node.pk,
        )
        return Response(
            {
                "keep_going": answer.keep_going,
                "cancel_requested": answer.cancel_requested,
                "state": answer.state,
            }
        )


class AgentJobFinishView(_AgentJobView):
    """The outcome of a job this node holds (409 when it no longer holds the lease)."""

    @extend_schema(request=JobFinishSerializer, responses={200: dict, 409: dict})
    def post(self, request: Request, pk: int) -> Response:
        serializer = JobFinishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = self.own_job(request, pk)
        if isinstance(job, Response):
            return job
        node = self.node(request)
        result = data["result"]
        if isinstance(result, dict) and data["code"]:
            result = {**result, "code": data["code"]}
        elif data["code"]:
            result = {"code": data["code"]}
        finished = job_services.finish(
            pk,
            node.name,
            outcome=data["outcome"],
            result=result,
            error=data["error"],
            retryable=data["retryable"],
            log_text=data["log"],
            progress=_clean_progress(data["progress"]) if data["progress"] else None,
            node_id=node.pk,
        )
        if finished is None:
            return Response(
                {"detail": "This node no longer holds the job's lease.", "code": "lease_lost"},
                status=status.HTTP_409_CONFLICT,
            )
        return Response({"state": finished.state, "error": finished.error})


PROGRESS_KEYS = {
    "stage": str,
    "bytes_done": int,
    "bytes_total": int,
    "bytes_transferred": int,
    "rate_bps": float,
    "eta_s": float,
    "current_file": str,
    "files_done": int,
    "files_total": int,
    "percent": float,
}


def _clean_progress(progress: dict[str, Any]) -> dict[str, Any]:
    """Only the known keys, with the right types (what pages and the API show)."""
    clean: dict[str, Any] = {}
    for key, kind in PROGRESS_KEYS.items():
        value = progress.get(key)
        if value is None:
            continue
        try:
            clean[key] = kind(value) if kind is not str else str(value)[:500]
        except (TypeError, ValueError):
            continue
    return clean


class AgentJobsReleaseView(_AgentJobView):
    """Sent by an agent when it starts: jobs it held before a crash are handed back at once."""

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "JobsReleased", {"released": serializers.ListField(child=serializers.IntegerField())}
        ),
    )
    def post(self, request: Request) -> Response:
        node = self.node(request)
        released = job_services.release_leases(node.name, node_id=node.pk)
        return Response({"released": released})
