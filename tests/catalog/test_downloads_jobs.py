"""Job rows for downloads: create → dispatch on commit, claim under a lease, progress, finish,
cancel, retry, reconcile, and the per-node inventory they keep (no agents here: the agent's
part is played by calling the same services its API endpoints call)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from core import job_services
from core.errors import ConflictError, ServiceError
from core.history import ChangeContext
from core.jobs import Job, JobKind, JobState
from core.models import HistoryEvent
from fleet import services as fleet_services
from fleet.choices import CommandKind
from fleet.models import Node, NodeCommand
from models_catalog import downloads
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant
from tests.broker import JobMessages

pytestmark = pytest.mark.django_db
COMMIT = "ab" * 20


@pytest.fixture
def sent() -> JobMessages:
    """Celery messages the job kinds sent, read back from Redis: (task, job id, queue)."""
    return JobMessages()


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


def make_node(name: str) -> Node:
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    node, _ = fleet_services.join_node(join_key=key, name=name)
    return node


def make_variant(
    name: str = "original", paths: tuple[str, ...] = ("config.json", "w.bin")
) -> Variant:
    model, _ = CatalogModel.objects.get_or_create(
        repo_id="fleet-test/unit", defaults={"commit_sha": COMMIT}
    )
    files = []
    for index, path in enumerate(paths):
        row, _ = ModelFile.objects.get_or_create(
            model=model,
            path=path,
            defaults={"size": 100 * (index + 1), "sha256": f"{index:x}" * 64, "blob_id": "e" * 40},
        )
        files.append(row)
    variant = Variant.objects.create(
        model=model, name=name, format="safetensors", size=sum(f.size for f in files)
    )
    variant.files.set(files)
    return variant


def result_for(variant: Variant) -> dict[str, Any]:
    return {
        "files": [
            {"path": f.path, "sha256": f.sha256, "size": f.size} for f in variant.files.all()
        ],
        "size": variant.size,
        "commit": COMMIT,
        "verified_at": timezone.now().isoformat(),
    }


def verbs(job: Job) -> list[str]:
    return list(
        HistoryEvent.objects.filter(target_type="core.job", target_id=str(job.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )


# --- put on nodes -----------------------------------------------------------------------------
def test_put_on_two_nodes_caches_first_and_node_jobs_wait_for_it(
    ctx, sent, django_capture_on_commit_callbacks
):
    variant = make_variant()
    a, b = make_node("node-a"), make_node("node-b")

    with django_capture_on_commit_callbacks(execute=True):
        jobs = downloads.put_variant_on_nodes(ctx, variant, [a, b])

    cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    assert [job.node for job in jobs] == [a, b]
    assert all(job_services.waiting_for(job) == cache.pk for job in jobs)
    assert sent == [("models_catalog.tasks.cache_variant", cache.pk, "control")]
    assert set(NodeModel.objects.values_list("node__name", "state")) == {
        ("node-a", "downloading"),
        ("node-b", "downloading"),
    }
    assert job_services.claim(jobs[0].pk, "node-a", node_id=a.pk) is None, "still waiting"

    # the cache job succeeds: the node jobs are sent to their nodes' queues
    assert job_services.claim(cache.pk, "worker:1") is not None
    with django_capture_on_commit_callbacks(execute=True):
        job_services.finish(cache.pk, "worker:1", outcome="succeeded", result={})
    assert sent[1:] == [
        ("fleet.agent.download", jobs[0].pk, a.queue),
        ("fleet.agent.download", jobs[1].pk, b.queue),
    ]
    assert verbs(jobs[0]) == ["created"]


def test_a_failed_cache_job_fails_the_node_jobs_waiting_for_it(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node])
    cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    job_services.claim(cache.pk, "worker:1")

    job_services.finish(cache.pk, "worker:1", outcome="failed", error="upstream says no")

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert f"Job #{cache.pk}" in job.error and "upstream says no" in job.error
    assert "Retry this job" in job.error
    assert not NodeModel.objects.exists(), "nothing marked present or arriving"


def test_retrying_a_node_job_whose_cache_failed_caches_again(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node])
    first_cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    job_services.claim(first_cache.pk, "worker:1")
    job_services.finish(first_cache.pk, "worker:1", outcome="failed", error="x")

    job = job_services.retry(ctx, Job.objects.get(pk=job.pk))

    second_cache = Job.objects.filter(kind=JobKind.CACHE_VARIANT).exclude(pk=first_cache.pk).get()
    assert job.state == JobState.QUEUED
    assert job_services.waiting_for(job) == second_cache.pk
    assert NodeModel.objects.get().state == NodeModel.State.DOWNLOADING
    assert verbs(job) == ["created", "failed", "retried"]


def test_upstream_source_skips_the_cache_and_sends_the_token_to_the_agent(ctx, sent):
    from core import services

    variant = make_variant()
    services.create_secret(ctx, name="hf", value="hf_secret_value")
    CatalogModel.objects.filter(pk=variant.model_id).update(secret_name="hf")
    node = make_node("node-a")

    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")

    assert not Job.objects.filter(kind=JobKind.CACHE_VARIANT).exists()
    assert job_services.waiting_for(job) is None
    claimed = job_services.claim(job.pk, "node-a", node_id=node.pk)
    assert claimed is not None
    spec = downloads.DownloadKind().agent_spec(claimed)
    assert spec["source"] == "upstream" and spec["token"] == "hf_secret_value"
    assert spec["commit"] == COMMIT
    assert [f["path"] for f in spec["files"]] == ["config.json", "w.bin"]
    assert "hf_secret_value" not in str(Job.objects.get(pk=job.pk).params)


def test_a_gated_model_without_a_secret_cannot_go_upstream(ctx, sent):
    variant = make_variant()
    CatalogModel.objects.filter(pk=variant.model_id).update(gated=True)
    with pytest.raises(ServiceError, match="gated: nodes fetching upstream need a token"):
        downloads.put_variant_on_nodes(ctx, variant, [make_node("node-a")], source="upstream")


def test_unknown_source_and_no_nodes_are_refused(ctx, sent):
    variant = make_variant()
    with pytest.raises(ServiceError, match="Unknown source"):
        downloads.put_variant_on_nodes(ctx, variant, [make_node("n1")], source="ftp")
    with pytest.raises(ServiceError, match="at least one node"):
        downloads.put_variant_on_nodes(ctx, variant, [])


def test_success_marks_present_and_putting_it_again_completes_at_once(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, "node-a", node_id=node.pk)
    job_services.finish(
        job.pk, "node-a", outcome="succeeded", result=result_for(variant), node_id=node.pk
    )
    placed = NodeModel.objects.get(node=node, variant=variant)
    assert placed.state == NodeModel.State.PRESENT
    assert placed.size == variant.size and placed.commit_sha == COMMIT
    assert placed.verified_at is not None

    sent.clear()
    (again,) = downloads.put_variant_on_nodes(ctx, variant, [node])

    assert again.state == JobState.SUCCEEDED
    assert again.result["already_present"] is True
    assert sent == [] and not Job.objects.filter(kind=JobKind.CACHE_VARIANT).exists()


def test_putting_twice_while_running_reuses_the_job(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (first,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    (second,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    assert first.pk == second.pk
    assert Job.objects.filter(kind=JobKind.DOWNLOAD).count() == 1


def test_a_success_report_with_a_wrong_checksum_is_not_marked_present(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, "node-a", node_id=node.pk)
    result = result_for(variant)
    result["files"][1]["sha256"] = "0" * 64

    finished = job_services.finish(job.pk, "node-a", outcome="succeeded", result=result)

    assert finished is not None and finished.state == JobState.FAILED
    assert "w.bin" in finished.error and "not marked present" in finished.error
    assert not NodeModel.objects.exists()


# --- the state machine ------------------------------------------------------------------------
def test_only_one_claim_wins_and_progress_renews_the_lease(ctx, sent, settings):
    settings.FLEET_JOB_LEASE_SECONDS = 30
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")

    claimed = job_services.claim(job.pk, "node-a", node_id=node.pk)
    assert claimed is not None and claimed.state == JobState.RUNNING and claimed.attempts == 1
    assert job_services.claim(job.pk, "someone-else") is None
    assert job_services.claim(job.pk, "node-b", node_id=make_node("node-b").pk) is None
    first_lease = claimed.lease_expires_at

    answer = job_services.report_progress(
        job.pk, "node-a", {"percent": 40.0, "bytes_done": 120}, log_text="half way"
    )
    assert answer.keep_going and not answer.cancel_requested
    job.refresh_from_db()
    assert job.progress["percent"] == 40.0 and "half way" in job.log_tail
    assert job.lease_expires_at >= first_lease
    assert not job_services.report_progress(job.pk, "intruder", {}).keep_going
    assert verbs(job) == ["created", "started"]


def test_a_retryable_failure_goes_back_to_the_queue_until_attempts_run_out(ctx, sent):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    Job.objects.filter(pk=job.pk).update(max_attempts=2)

    job_services.claim(job.pk, "node-a")
    again = job_services.finish(job.pk, "node-a", outcome="failed", error="net", retryable=True)
    assert again is not None and again.state == JobState.QUEUED
    assert again.lease_expires_at > timezone.now(), "dispatched again after a backoff"
    assert "retrying in" in again.log_tail

    job_services.claim(job.pk, "node-a")
    final = job_services.finish(job.pk, "node-a", outcome="failed", error="net", retryable=True)
    assert final is not None and final.state == JobState.FAILED and final.error == "net"
    assert not NodeModel.objects.exists()


def test_cancel_queued_at_once_running_through_the_progress_answer(ctx, sent):
    variant = make_variant()
    a, b = make_node("node-a"), make_node("node-b")
    queued, running = downloads.put_variant_on_nodes(ctx, variant, [a, b], source="upstream")
    job_services.claim(running.pk, "node-b")

    job_services.request_cancel(ctx, Job.objects.get(pk=queued.pk))
    job_services.request_cancel(ctx, Job.objects.get(pk=running.pk))

    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    assert Job.objects.get(pk=running.pk).state == JobState.RUNNING
    assert job_services.report_progress(running.pk, "node-b", {}).cancel_requested
    job_services.finish(running.pk, "node-b", outcome="cancelled")
    assert Job.objects.get(pk=running.pk).state == JobState.CANCELLED
    assert verbs(running) == ["created", "started", "cancel_requested", "cancelled"]
    assert not NodeModel.objects.exists()
    with pytest.raises(ConflictError, match="nothing to cancel"):
        job_services.request_cancel(ctx, Job.objects.get(pk=running.pk))


def test_retry_refuses_jobs_that_did_not_end_badly(ctx, sent):
    variant = make_variant()
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [make_node("a")], source="upstream")
    with pytest.raises(ConflictError, match="Only failed or cancelled"):
        job_services.retry(ctx, job)


def test_reconcile_requeues_expired_leases_and_resends_lost_messages(
    ctx, sent, django_capture_on_commit_callbacks
):
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, "node-a")
    later = timezone.now() + timedelta(hours=1)

    with django_capture_on_commit_callbacks(execute=True):
        report = job_services.reconcile(now=later)

    job.refresh_from_db()
    assert report.requeued == [job.pk]
    assert job.state == JobState.QUEUED and job.lease_owner == ""
    assert sent == [("fleet.agent.download", job.pk, node.queue)]
    assert "expired; queued again" in job.log_tail
    assert "requeued" in verbs(job)

    # the message is lost too: after the dispatch deadline it is sent again
    report = job_services.reconcile(now=timezone.now() + timedelta(hours=2))
    assert report.dispatched == [job.pk] and len(sent) == 2


def test_reconcile_fails_a_job_that_lost_its_worker_too_often(ctx, sent):
    variant = make_variant()
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [make_node("node-a")], source="upstream")
    Job.objects.filter(pk=job.pk).update(max_attempts=1)
    job_services.claim(job.pk, "node-a")

    job_services.reconcile(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "node-a stopped reporting 1 times" in job.error
    assert "agent" in job.error


def test_reconcile_settles_jobs_waiting_on_a_cancelled_cache_job(ctx, sent):
    variant = make_variant()
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [make_node("node-a")])
    cache = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    # cancelled by someone while queued: its dependents fail with it at once
    job_services.request_cancel(ctx, cache)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "cancelled" in job.error


# --- live updates -----------------------------------------------------------------------------
def test_progress_reaches_the_job_node_and_variant_groups(ctx, sent, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    layer = get_channel_layer()
    variant = make_variant()
    node = make_node("node-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    channel = async_to_sync(layer.new_channel)()
    for group in (f"job.{job.pk}", f"node.{node.pk}", f"variant.{variant.pk}", "jobs"):
        async_to_sync(layer.group_add)(group, channel)

    job_services.claim(job.pk, "node-a")
    job_services.push(job.pk, transition=True)
    job_services.report_progress(job.pk, "node-a", {"percent": 10.0})
    job_services.push(job.pk, transition=False)  # within the interval: dropped
    messages = []
    while True:
        try:
            messages.append(async_to_sync(layer.receive)(channel))
        except Exception:
            break
        if len(messages) > 20:
            break
        if not async_to_sync(_pending)(layer, channel):
            break
    payloads = [m["payload"] for m in messages]
    assert {m["type"] for m in messages} == {"job.update"}
    assert len(payloads) == 4, "a transition to the four groups, no progress within 0.3 s"
    assert payloads[0]["state"] == "running" and payloads[0]["node_name"] == "node-a"
    assert payloads[0]["target_name"] == str(variant)


async def _pending(layer: Any, channel: str) -> bool:
    return bool(layer.channels.get(channel))


# --- inventory: pin and delete ------------------------------------------------------------
def _present(ctx: ChangeContext, variant: Variant, node: Node) -> NodeModel:
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, node.name)
    job_services.finish(job.pk, node.name, outcome="succeeded", result=result_for(variant))
    return NodeModel.objects.get(node=node, variant=variant)


def test_pinned_variants_are_not_deleted_and_deletion_keeps_shared_files(ctx, sent):
    node = make_node("node-a")
    original = make_variant("original", ("config.json", "w.bin"))
    quant = make_variant("q8", ("config.json", "q8.bin"))
    placed = _present(ctx, original, node)
    _present(ctx, quant, node)

    downloads.set_pinned(ctx, placed, True)
    with pytest.raises(ConflictError, match="pinned"):
        downloads.delete_from_node(ctx, placed)
    downloads.set_pinned(ctx, placed, False)

    command = downloads.delete_from_node(ctx, placed)

    assert not NodeModel.objects.filter(pk=placed.pk).exists()
    assert command.kind == CommandKind.DELETE_MODEL
    assert command.arguments == {
        "repo_id": "fleet-test/unit",
        "commit": COMMIT,
        "paths": ["w.bin"],  # config.json stays: q8 still uses it
    }
    verbs_ = list(
        HistoryEvent.objects.filter(target_type="models_catalog.nodemodel").values_list(
            "verb", flat=True
        )
    )
    assert sorted(verbs_) == ["deleted", "pinned", "unpinned"]
    assert NodeCommand.objects.filter(kind="delete_model").count() == 1


def test_deleting_is_refused_while_a_replica_uses_it_or_a_download_runs(ctx, sent):
    from deployments.choices import ReplicaState
    from deployments.models import Deployment, DeploymentRevision, Replica

    node = make_node("node-a")
    variant = make_variant()
    placed = _present(ctx, variant, node)
    deployment = Deployment.objects.create(name="uses-it")
    revision = DeploymentRevision.objects.create(
        deployment=deployment,
        number=1,
        spec={},
        variant=variant,
        runtime="llamacpp",
        author_type="system",
        author_name="test",
    )
    replica = Replica.objects.create(
        deployment=deployment, revision=revision, slot=0, node=node, state=ReplicaState.AVAILABLE
    )
    with pytest.raises(ConflictError, match="running replica"):
        downloads.delete_from_node(ctx, placed)
    Replica.objects.filter(pk=replica.pk).update(state=ReplicaState.GONE)

    other = make_variant("other", ("x.bin",))
    (job,) = downloads.put_variant_on_nodes(ctx, other, [node], source="upstream")
    arriving = NodeModel.objects.get(variant=other)
    with pytest.raises(ConflictError, match=f"Download job #{job.pk}"):
        downloads.delete_from_node(ctx, arriving)
