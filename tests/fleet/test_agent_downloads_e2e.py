"""Real agents (``manage.py fleet_agent``) downloading through the live server's mirror.

The control plane runs in this process: pytest-django's live server (API, mirror), a real
Celery worker thread on a control queue of its own (cache jobs from the test upstream hub),
and the job reconciler in a thread (beat's job). Agents reach the server through a proxy that
counts the bytes of every file transfer (and can slow them down), so a test can watch
progress, cancel mid-transfer, or kill an agent mid-file and count what was sent again.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from core.history import ChangeContext
from core.jobs import Job, JobKind, JobState
from fleet import services as fleet_services
from fleet.agent.downloads import file_digest
from fleet.choices import CommandState, NodeState
from fleet.models import Node, NodeCommand
from models_catalog.models import NodeModel, Variant
from tests import downloads_support
from tests.downloads_support import (
    Reconciler,
    counting_proxy,
    import_variant,
    variant_with,
    wait_job,
)
from tests.fleet.agents import Agent, AgentRunner, purge_node_queues, wait_until
from tests.hubserver.fixtures import BAD, MIRROR_COMMIT, TINY, catalog_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ID_SPAN = 1000
control_worker = downloads_support.control_worker
reconciler = downloads_support.reconciler


@pytest.fixture
def node_ids(transactional_db: None) -> range:
    base = random.randrange(10**6, 10**9)  # noqa: S311 - spreading ids, not secrets
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('fleet_node', 'id'), %s, false)", [base]
        )
    ids = range(base, base + ID_SPAN)
    purge_node_queues(django_settings.REDIS_URL, list(ids))
    return ids


@pytest.fixture
def plane(settings: Any, tmp_path: Path, upstream_hub: str) -> None:
    settings.FLEET_HF_ENDPOINT = upstream_hub
    settings.FLEET_MODEL_STORE = tmp_path / "store"
    settings.FLEET_JOB_LEASE_SECONDS = 3


@pytest.fixture
def proxied(live_server: Any) -> Iterator[tuple[str, Any]]:
    with counting_proxy(live_server.url) as (url, state):
        yield url, state


@pytest.fixture
def runner(
    transactional_db: None, plane: None, proxied: tuple[str, Any], node_ids: range, tmp_path: Path
) -> Iterator[AgentRunner]:
    cache.clear()  # the join endpoint's throttle
    agents = AgentRunner(tmp_path / "agents", proxied[0])
    yield agents
    agents.stop_all()
    purge_node_queues(django_settings.REDIS_URL, list(node_ids))


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


@pytest.fixture
def operator(operator_user: Any) -> APIClient:
    client = APIClient()
    client.force_login(operator_user)
    return client


def start(runner: AgentRunner, name: str, data_dir: Path | None = None) -> tuple[Agent, Node]:
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    agent = runner.start(name, join_token=key, data_dir=data_dir)

    def ready() -> Node | None:
        if not agent.running():
            raise AssertionError(f"agent {name} exited\n{agent.tail()}")
        return Node.objects.filter(name=name, state=NodeState.READY).first()

    return agent, wait_until(ready, 40, message=runner.tails)


def cached_files(agent: Agent, repo_id: str, commit: str) -> dict[str, str]:
    """{path: sha256} of the snapshot in the agent's hub cache."""
    snapshot = agent.data_dir / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    folder = snapshot / commit
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): file_digest(p, "sha256")
        for p in folder.rglob("*")
        if p.is_file()
    }


def expected(variant: Variant) -> dict[str, str]:
    return {f.path: f.sha256 for f in variant.files.all()}


def test_put_on_two_nodes_progress_already_present_delete_cancel_and_retry(
    runner, proxied, control_worker, reconciler, ctx, operator
):
    _, counted = proxied
    suffix = uuid.uuid4().hex[:6]
    (agent_a, node_a), (agent_b, node_b) = (
        start(runner, f"dl-a-{suffix}"),
        start(runner, f"dl-b-{suffix}"),
    )
    variant = import_variant(ctx, TINY)
    size = sum(f.size for f in variant.files.all())
    counted.rate_bps = 1_500_000  # two nodes × 2.5 MB: a couple of seconds of progress

    answer = operator.post(
        "/api/v1/downloads/",
        {"variant": variant.pk, "nodes": [node_a.pk, node_b.pk], "reason": "e2e"},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    jobs = answer.json()
    assert [j["node_name"] for j in jobs] == sorted([node_a.name, node_b.name])
    cache_job = Job.objects.get(kind=JobKind.CACHE_VARIANT)
    assert all(j["waiting_for"] == cache_job.pk for j in jobs)

    seen: list[dict[str, Any]] = []

    def done() -> bool:
        rows = list(Job.objects.filter(kind=JobKind.DOWNLOAD).order_by("pk"))
        for row in rows:
            if row.state == JobState.RUNNING and row.progress:
                seen.append(dict(row.progress))
        return all(row.is_finished for row in rows)

    wait_until(done, 60, interval=0.1, message=runner.tails)
    assert wait_job(cache_job.pk).state == JobState.SUCCEEDED
    for job in jobs:
        finished = Job.objects.get(pk=job["id"])
        assert finished.state == JobState.SUCCEEDED, (finished.error, runner.tails())
    middle = [p for p in seen if 0 < p.get("percent", 0) < 100]
    assert middle, f"no progress seen in between: {seen[:5]}"
    assert any(p.get("rate_bps", 0) > 0 and p.get("current_file") for p in middle)
    assert any(p.get("eta_s") is not None for p in middle)
    for agent, node in ((agent_a, node_a), (agent_b, node_b)):
        assert cached_files(agent, TINY, variant.model.commit_sha) == expected(variant)
        placed = NodeModel.objects.get(node=node, variant=variant)
        assert placed.state == NodeModel.State.PRESENT and placed.size == size
    listing = operator.get(f"/api/v1/node-models/?variant={variant.pk}").json()
    assert {row["node_name"] for row in listing["results"]} == {node_a.name, node_b.name}
    assert counted.resolve_bytes() == 2 * size, "each node fetched each file once"

    # already present: completes at once, nothing sent
    again = operator.post(
        "/api/v1/downloads/", {"variant": variant.pk, "nodes": [node_a.pk]}, format="json"
    ).json()
    assert again[0]["state"] == "succeeded"
    assert Job.objects.get(pk=again[0]["id"]).result["already_present"] is True

    # delete from node a: the agent removes the files
    placed = NodeModel.objects.get(node=node_a, variant=variant)
    assert operator.delete(f"/api/v1/node-models/{placed.pk}/").status_code == 202
    command = NodeCommand.objects.get(node=node_a, kind="delete_model")
    wait_until(
        lambda: NodeCommand.objects.get(pk=command.pk).state != CommandState.SENT,
        20,
        message=runner.tails,
    )
    command.refresh_from_db()
    assert command.state == CommandState.SUCCEEDED, command.error
    assert command.result["freed_bytes"] == size
    assert cached_files(agent_a, TINY, variant.model.commit_sha) == {}
    assert cached_files(agent_b, TINY, variant.model.commit_sha) == expected(variant)

    # put it back slowly, cancel mid-transfer, then retry
    counted.rate_bps = 300_000
    (job,) = operator.post(
        "/api/v1/downloads/", {"variant": variant.pk, "nodes": [node_a.pk]}, format="json"
    ).json()
    wait_until(
        lambda: (Job.objects.get(pk=job["id"]).progress or {}).get("bytes_done", 0) > 200_000,
        30,
        interval=0.1,
        message=runner.tails,
    )
    cancelled = operator.post(f"/api/v1/jobs/{job['id']}/cancel/", {}, format="json")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    final = wait_job(job["id"], 20, message=runner.tails)
    assert final.state == JobState.CANCELLED
    assert not list(agent_a.data_dir.rglob("*.incomplete")), "temporary files are cleaned"
    assert not NodeModel.objects.filter(node=node_a).exists()

    counted.rate_bps = None
    retried = operator.post(f"/api/v1/jobs/{job['id']}/retry/", {}, format="json")
    assert retried.status_code == 200
    assert retried.json()["state"] in ("queued", "running")  # the agent may be that quick
    assert wait_job(job["id"], 30, message=runner.tails).state == JobState.SUCCEEDED
    assert cached_files(agent_a, TINY, variant.model.commit_sha) == expected(variant)
    detail = operator.get(f"/api/v1/jobs/{job['id']}/").json()
    assert "cancel requested by" in detail["log_tail"] and "retried by" in detail["log_tail"]


def test_a_killed_agent_resumes_without_downloading_twice(
    runner, proxied, reconciler: Reconciler, ctx, tiny_model_dir, capsys
):
    _, counted = proxied
    model = catalog_tiny_model(tiny_model_dir, MIRROR_COMMIT)  # every file in the store
    variant = variant_with(model, "original", list(model.files.values_list("path", flat=True)))
    size = sum(f.size for f in variant.files.all())
    agent, node = start(runner, f"dl-kill-{uuid.uuid4().hex[:6]}")
    counted.rate_bps = 600_000  # ~4 s for the model

    from models_catalog.downloads import put_variant_on_nodes

    (job,) = put_variant_on_nodes(ctx, variant, [node])
    wait_until(
        lambda: (Job.objects.get(pk=job.pk).progress or {}).get("bytes_done", 0) > 0.4 * size,
        30,
        interval=0.05,
        message=runner.tails,
    )
    agent.kill()  # SIGKILL the process group mid-file
    partials = list(agent.data_dir.rglob("*.incomplete"))
    assert partials and partials[0].stat().st_size > 0, "a partial file is on disk"
    killed_at = partials[0].stat().st_size

    counted.rate_bps = None
    restarted = runner.start(agent.name, data_dir=agent.data_dir)
    final = wait_job(job.pk, 40, message=runner.tails)

    assert final.state == JobState.SUCCEEDED, (final.error, runner.tails())
    assert final.attempts == 2
    assert "expired; queued again" in final.log_tail
    assert f"resuming at {killed_at}" in final.log_tail
    assert f"bytes={killed_at}-" in counted.ranges("model.safetensors")
    sent = counted.resolve_bytes()
    ratio = sent / size
    with capsys.disabled():
        print(f"\nresume: {sent} bytes sent for {size} bytes of files (ratio {ratio:.4f})")
    assert ratio <= 1.05
    assert cached_files(restarted, TINY, MIRROR_COMMIT) == expected(variant)
    assert NodeModel.objects.get(node=node).state == NodeModel.State.PRESENT


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "small-disk"
    target.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests run as root): {done.stderr!r}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def test_bad_upstream_files_and_a_small_disk_fail_with_actionable_messages(
    runner, ctx, small_disk, tmp_path, tiny_model_dir
):
    _, node = start(runner, f"dl-bad-{uuid.uuid4().hex[:6]}", data_dir=small_disk)
    bad = import_variant(ctx, BAD).model
    corrupt = variant_with(bad, "corrupt", ["config.json", "corrupt.bin"])
    hostile = variant_with(bad, "hostile", ["config.json"])
    from models_catalog.downloads import put_variant_on_nodes
    from models_catalog.models import ModelFile

    hostile.files.add(
        ModelFile.objects.create(
            model=bad, path="../escape.txt", size=20, sha256="a" * 64, blob_id="b" * 40
        )
    )
    model = catalog_tiny_model(tiny_model_dir, MIRROR_COMMIT)
    too_big = variant_with(model, "original", list(model.files.values_list("path", flat=True)))

    (corrupt_job,) = put_variant_on_nodes(ctx, corrupt, [node], source="upstream")
    (hostile_job,) = put_variant_on_nodes(ctx, hostile, [node], source="upstream")
    (big_job,) = put_variant_on_nodes(ctx, too_big, [node])

    corrupt_job = wait_job(corrupt_job.pk, 30, message=runner.tails)
    assert corrupt_job.state == JobState.FAILED
    assert corrupt_job.error.startswith("Checksum mismatch for corrupt.bin")
    hostile_job = wait_job(hostile_job.pk, 30, message=runner.tails)
    assert hostile_job.state == JobState.FAILED
    assert "'../escape.txt'" in hostile_job.error and "Nothing was written" in hostile_job.error
    assert not (small_disk / "hub" / "escape.txt").exists()
    assert not list(tmp_path.rglob("escape.txt"))
    big_job = wait_job(big_job.pk, 30, message=runner.tails)
    assert big_job.state == JobState.FAILED
    assert big_job.error.startswith(f"Not enough disk space on {node.name}")
    assert not NodeModel.objects.exists(), "nothing is marked present"
