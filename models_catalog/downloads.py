"""Filling the fleet store and putting variants on nodes (use cases; jobs do the work).

- :func:`cache_variant` / :func:`ensure_cached`: a control-side job (``cache_variant``) fetches
  a variant's files that the fleet store lacks from the upstream hub, verified by sha256.
- :func:`put_variant_on_nodes`: one ``download`` job per node, run by that node's agent into
  its hub cache. The source is the fleet mirror (default: the cache job runs first and the
  node jobs wait for it) or the upstream hub directly (opt-in: no copy in the store, but every
  node needs internet access and receives the model's token; see docs/downloads.md).
- :func:`delete_from_node` and :func:`set_pinned`: the per-node inventory (:class:`NodeModel`).

The job kinds' handlers (how they are sent, what the agent is told when it claims one, and
the bookkeeping when one ends) are at the bottom and registered from ``job_kinds``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core import job_services
from core.errors import ConflictError, ServiceError
from core.history import ChangeContext, record
from core.jobs import Job, JobKind, JobState
from core.services import reveal_secret
from fleet.models import Node
from models_catalog import references, store
from models_catalog.models import ModelFile, NodeModel, Variant

SOURCE_MIRROR = "mirror"
SOURCE_UPSTREAM = "upstream"
SOURCES = (SOURCE_MIRROR, SOURCE_UPSTREAM)
VARIANT_TARGET = "models_catalog.variant"
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
PROGRESS_INTERVAL_S = 0.5
MAX_NODES_PER_REQUEST = 200


def variant_files(variant: Variant) -> list[ModelFile]:
    return list(variant.files.order_by("path"))


def missing_from_store(files: Iterable[ModelFile]) -> list[ModelFile]:
    return [f for f in files if not (f.sha256 and store.has_blob(f.sha256))]


def active_job(kind: str, variant: Variant, node: Node | None = None) -> Job | None:
    jobs = Job.objects.filter(
        kind=kind,
        target_type=VARIANT_TARGET,
        target_id=str(variant.pk),
        state__in=ACTIVE_STATES,
    )
    if node is not None:
        jobs = jobs.filter(node=node)
    return jobs.order_by("created_at").first()


# --- The fleet store ------------------------------------------------------------------------
def _create_cache_job(ctx: ChangeContext, variant: Variant) -> Job:
    return job_services.create_job(
        ctx,
        kind=JobKind.CACHE_VARIANT,
        target_type=VARIANT_TARGET,
        target_id=variant.pk,
        target_name=str(variant),
        params={"variant": variant.pk, "model": variant.model_id},
    )


def ensure_cached(ctx: ChangeContext, variant: Variant) -> Job | None:
    """The job bringing the variant's files into the store; None when they are all there."""
    if not missing_from_store(variant_files(variant)):
        return None
    return active_job(JobKind.CACHE_VARIANT, variant) or _create_cache_job(ctx, variant)


@transaction.atomic
def cache_variant(ctx: ChangeContext, variant: Variant) -> Job:
    """An operator's "cache in the fleet store": a job, finished at once if nothing is missing."""
    variant = Variant.objects.select_for_update().select_related("model").get(pk=variant.pk)
    existing = active_job(JobKind.CACHE_VARIANT, variant)
    if existing is not None:
        return existing
    files = variant_files(variant)
    job = _create_cache_job(ctx, variant)
    if not missing_from_store(files):
        job = job_services.complete_at_once(
            ctx,
            job,
            result={"already_cached": True, "files": len(files), "bytes_transferred": 0},
            note="every file is already in the fleet store",
        )
    return job


# --- Nodes ----------------------------------------------------------------------------------
def put_variant_on_nodes(
    ctx: ChangeContext, variant: Variant, nodes: Iterable[Node], source: str = SOURCE_MIRROR
) -> list[Job]:
    """One download job per node (reusing one already under way); present ones finish at once."""
    if source not in SOURCES:
        raise ServiceError(
            f"Unknown source {source!r}: use 'mirror' (default) or 'upstream'.", field="source"
        )
    nodes = list({node.pk: node for node in nodes}.values())
    if not nodes:
        raise ServiceError("Name at least one node.", field="nodes")
    if len(nodes) > MAX_NODES_PER_REQUEST:
        raise ServiceError(f"At most {MAX_NODES_PER_REQUEST} nodes at a time.", field="nodes")
    with transaction.atomic():
        variant = Variant.objects.select_for_update().select_related("model").get(pk=variant.pk)
        model = variant.model
        if not variant_files(variant):
            raise ServiceError(f"{variant} has no files to download.", field="variant")
        if source == SOURCE_UPSTREAM and (model.gated or model.private) and not model.secret_name:
            raise ServiceError(
                f"{model.repo_id} is {'gated' if model.gated else 'private'}: nodes fetching "
                "upstream need a token. Set the model's token secret, or use the mirror.",
                field="source",
            )
        cache_job: Job | None = None
        jobs: list[Job] = []
        for node in sorted(nodes, key=lambda n: n.name):
            existing = active_job(JobKind.DOWNLOAD, variant, node)
            if existing is not None:
                jobs.append(existing)
                continue
            placed = NodeModel.objects.filter(node=node, variant=variant).first()
            present = (
                placed is not None
                and placed.state == NodeModel.State.PRESENT
                and placed.commit_sha == model.commit_sha
            )
            after = None
            if source == SOURCE_MIRROR and not present:
                cache_job = cache_job or ensure_cached(ctx, variant)
                after = cache_job
            job = job_services.create_job(
                ctx,
                kind=JobKind.DOWNLOAD,
                target_type=VARIANT_TARGET,
                target_id=variant.pk,
                target_name=str(variant),
                node=node,
                params={"variant": variant.pk, "model": model.pk, "source": source},
                after=after,
            )
            if present:
                assert placed is not None
                job = job_services.complete_at_once(
                    ctx,
                    job,
                    result={
                        "already_present": True,
                        "commit": placed.commit_sha,
                        "size": placed.size,
                        "bytes_transferred": 0,
                        "verified_at": placed.verified_at.isoformat()
                        if placed.verified_at
                        else None,
                    },
                    note=f"{variant} is already present on {node.name} at this commit",
                )
            else:
                _mark_downloading(node, variant, model.commit_sha)
            jobs.append(job)
    return jobs


def _mark_downloading(node: Node, variant: Variant, commit_sha: str) -> None:
    placed, created = NodeModel.objects.get_or_create(
        node=node,
        variant=variant,
        defaults={"commit_sha": commit_sha, "state": NodeModel.State.DOWNLOADING},
    )
    if not created and placed.state != NodeModel.State.PRESENT:
        placed.commit_sha = commit_sha
        placed.updated_at = timezone.now()
        placed.save(update_fields=["commit_sha", "updated_at"])


NODE_MODEL_FIELDS = ("state", "commit_sha", "size", "pinned")


@transaction.atomic
def set_pinned(ctx: ChangeContext, placed: NodeModel, pinned: bool) -> NodeModel:
    """Pinned variants are kept by cleanups (and deletion asks to unpin first)."""
    placed = (
        NodeModel.objects.select_for_update().select_related("node", "variant").get(pk=placed.pk)
    )
    if placed.pinned == pinned:
        return placed
    placed.pinned = pinned
    placed.updated_at = timezone.now()
    placed.save(update_fields=["pinned", "updated_at"])
    record(
        ctx,
        "pinned" if pinned else "unpinned",
        placed,
        changes={"pinned": {"before": not pinned, "after": pinned}},
    )
    return placed


def delete_from_node(ctx: ChangeContext, placed: NodeModel) -> Any:
    """Remove a variant from a node: forget the row, tell the agent to delete the files."""
    from fleet import services as fleet_services
    from fleet.choices import CommandKind

    with transaction.atomic():
        placed = (
            NodeModel.objects.select_for_update()
            .select_related("node", "variant__model")
            .get(pk=placed.pk)
        )
        node, variant = placed.node, placed.variant
        if placed.pinned:
            raise ConflictError(
                f"{variant} is pinned on {node.name}; unpin it first if it should go."
            )
        if references.variant_in_use_on(node, variant):  # a replica (registered by deployments)
            raise ConflictError(
                f"A running replica on {node.name} uses {variant}; scale that deployment "
                "down or move it first."
            )
        job = active_job(JobKind.DOWNLOAD, variant, node)
        if job is not None:
            raise ConflictError(
                f"Download job #{job.pk} is bringing {variant} to {node.name}; cancel it first."
            )
        # Files shared with another variant of the model still on the node stay.
        others = (
            NodeModel.objects.filter(node=node, variant__model=variant.model)
            .exclude(pk=placed.pk)
            .values_list("variant_id", flat=True)
        )
        keep = set(ModelFile.objects.filter(variants__in=others).values_list("path", flat=True))
        paths = [f.path for f in variant_files(variant) if f.path not in keep]
        record(
            ctx,
            "deleted",
            placed,
            changes={
                "state": {"before": placed.state, "after": None},
                "size": {"before": placed.size, "after": None},
            },
        )
        commit = placed.commit_sha or variant.model.commit_sha
        placed.delete()
        command = fleet_services.send_command(
            ctx,
            node,
            CommandKind.DELETE_MODEL,
            {"repo_id": variant.model.repo_id, "commit": commit, "paths": paths},
        )
    return command


# --- Job kinds ------------------------------------------------------------------------------
def _send(task: str, job: Job, queue: str, expires: float) -> None:
    from config.celery import app

    app.send_task(
        task,
        args=[job.pk],
        queue=queue,
        expires=timezone.now() + timedelta(seconds=expires),
    )


class CacheVariantKind(job_services.JobKindHandler):
    kind = JobKind.CACHE_VARIANT

    def dispatch(self, job: Job) -> None:
        _send(
            "models_catalog.tasks.cache_variant",
            job,
            settings.CELERY_TASK_DEFAULT_QUEUE,
            self.message_expires(),
        )


class DownloadKind(job_services.JobKindHandler):
    kind = JobKind.DOWNLOAD

    def dispatch(self, job: Job) -> None:
        assert job.node is not None
        _send("fleet.agent.download", job, job.node.queue, self.message_expires())

    def agent_spec(self, job: Job) -> dict[str, Any]:
        """What the agent is told when it claims the job (the token only for upstream)."""
        variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
        if variant is None:
            raise ServiceError(f"{job.target_name} was deleted from the catalog.")
        model = variant.model
        source = (job.params or {}).get("source", SOURCE_MIRROR)
        spec: dict[str, Any] = {
            "job": job.pk,
            "kind": job.kind,
            "node": job.node.name if job.node else "",
            "source": source,
            "repo_id": model.repo_id,
            "commit": model.commit_sha,
            "revision": model.requested_revision,
            "variant": {"id": variant.pk, "name": variant.name},
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id}
                for f in variant_files(variant)
            ],
            "endpoint": None,  # the agent's own server + /hub
            "token": None,  # the agent's node credential
            "progress_interval_s": PROGRESS_INTERVAL_S,
        }
        if source == SOURCE_UPSTREAM:
            spec["endpoint"] = settings.FLEET_HF_ENDPOINT
            spec["token"] = reveal_secret(model.secret_name) if model.secret_name else None
        return spec

    def check_result(self, job: Job, result: dict[str, Any]) -> str:
        """An agent's success report checked against the catalog; '' or what is wrong."""
        variant = Variant.objects.filter(pk=job.target_id).first()
        if variant is None:
            return f"{job.target_name} was deleted from the catalog meanwhile."
        reported = {
            str(f.get("path")): str(f.get("sha256", "")).lower()
            for f in result.get("files") or []
            if isinstance(f, dict)
        }
        for f in variant_files(variant):
            if reported.get(f.path) != f.sha256:
                return (
                    f"The agent reported {f.path} with sha256 {reported.get(f.path) or 'none'}, "
                    f"the catalog expects {f.sha256}; not marked present. Retry the job."
                )
        return ""

    def on_finished(self, job: Job, ctx: ChangeContext) -> None:
        variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
        if variant is None or job.node_id is None:
            return
        placed = NodeModel.objects.filter(node_id=job.node_id, variant=variant).first()
        if job.state == JobState.SUCCEEDED:
            result = job.result or {}
            if result.get("already_present"):
                return
            verified = parse_datetime(str(result.get("verified_at") or "")) or timezone.now()
            NodeModel.objects.update_or_create(
                node_id=job.node_id,
                variant=variant,
                defaults={
                    "state": NodeModel.State.PRESENT,
                    "commit_sha": str(result.get("commit") or variant.model.commit_sha),
                    "size": int(result.get("size") or variant.size or 0),
                    "verified_at": verified,
                    "updated_at": timezone.now(),
                },
            )
        elif placed is not None and placed.state == NodeModel.State.DOWNLOADING:
            placed.delete()

    def on_retry(self, ctx: ChangeContext, job: Job) -> None:
        variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
        if variant is None or job.node is None:
            raise ConflictError(f"{job.target_name} is no longer in the catalog; cannot retry.")
        if (job.params or {}).get("source", SOURCE_MIRROR) == SOURCE_MIRROR:
            cache_job = ensure_cached(ctx, variant)
            if cache_job is not None:
                job.params = {**job.params, job_services.AFTER_JOB: cache_job.pk}
        _mark_downloading(job.node, variant, variant.model.commit_sha)
