"""The agent's download job in this process against the live server (mirror and agent API).

``run_job`` is what the agent's ``fleet.agent.download`` task runs; here it is called directly
with the node's real credential, so claim, progress, finish, the mirror and the hub cache
layout are all real. Agent processes are in test_agent_downloads_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import snapshot_download, try_to_load_from_cache

from core import job_services
from core.history import ChangeContext
from core.jobs import Job, JobState
from fleet import services as fleet_services
from fleet.agent.client import ServerClient
from fleet.agent.downloads import (
    DownloadError,
    check_relative_path,
    delete_files,
    file_digest,
    run_job,
)
from fleet.models import Node
from models_catalog import downloads
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant
from tests.downloads_support import counting_proxy, import_variant, variant_with, wait_job
from tests.fleet.agents import wait_until
from tests.hubserver.fixtures import BAD, MIRROR_COMMIT, TINY, catalog_tiny_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def drained_queues(transactional_db: None) -> Iterator[None]:
    """run_job is called directly, so the download messages the jobs really sent to the node
    queues are never consumed: remove them after each test."""
    from fleet.models import Node
    from tests.broker import NodeQueues

    yield
    NodeQueues().drain(*(f"node.{pk}" for pk in Node.objects.values_list("pk", flat=True)))


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


@pytest.fixture
def node_and_key(transactional_db: None) -> tuple[Node, str]:
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name="unit")
    return fleet_services.join_node(join_key=key, name="unit-node")


@pytest.fixture
def tiny(transactional_db: None, settings: Any, tmp_path: Path, tiny_model_dir: Path) -> Variant:
    """The tiny model in the catalog with every file in the fleet store, one variant."""
    settings.FLEET_MODEL_STORE = tmp_path / "store"
    model = catalog_tiny_model(tiny_model_dir, MIRROR_COMMIT)
    return variant_with(model, "original", list(model.files.values_list("path", flat=True)))


def client_for(server: str, credential: str) -> ServerClient:
    client = ServerClient(server)
    client.credential = credential
    return client


def repo_dir(data_dir: Path, repo_id: str = TINY) -> Path:
    return data_dir / "hub" / ("models--" + repo_id.replace("/", "--"))


def put(ctx: ChangeContext, variant: Variant, node: Node, source: str = "mirror") -> Job:
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source=source)
    return job


# --- pure checks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["../escape.txt", "/etc/passwd", "a/../../b", "./x", "a//b", "", "nul\x00.bin", "C:/x", "a\\b"],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(DownloadError) as caught:
        check_relative_path(path)
    assert caught.value.code == "unsafe_path" and not caught.value.retryable
    assert "refusing" in caught.value.message


@pytest.mark.parametrize("path", ["config.json", "onnx/model.onnx", "a.b/c-d_e.gguf"])
def test_plain_relative_paths_pass(path: str) -> None:
    assert str(check_relative_path(path)) == path


# --- through the mirror -----------------------------------------------------------------------
def test_download_lands_in_a_standard_hub_cache_verified(
    ctx, live_server, tiny, node_and_key, tmp_path
):
    node, credential = node_and_key
    job = put(ctx, tiny, node)
    data_dir = tmp_path / "agent"

    outcome = run_job(job.pk, client_for(live_server.url, credential), data_dir, live_server.url)

    job.refresh_from_db()
    assert outcome == "succeeded" and job.state == JobState.SUCCEEDED, job.error
    placed = NodeModel.objects.get(node=node, variant=tiny)
    assert placed.state == NodeModel.State.PRESENT and placed.commit_sha == MIRROR_COMMIT
    assert placed.size == sum(f.size for f in tiny.files.all()) and placed.verified_at
    cache_dir = data_dir / "hub"
    for f in tiny.files.all():
        cached = try_to_load_from_cache(TINY, f.path, cache_dir=cache_dir, revision=MIRROR_COMMIT)
        assert isinstance(cached, str), f"{f.path} not found in the hub cache"
        assert file_digest(Path(cached), "sha256") == f.sha256
        assert Path(cached).is_symlink()
    # huggingface_hub sees a complete snapshot offline, and refs/main names the commit
    folder = snapshot_download(
        TINY, revision=MIRROR_COMMIT, cache_dir=cache_dir, local_files_only=True
    )
    assert Path(folder).name == MIRROR_COMMIT
    assert (repo_dir(data_dir) / "refs" / "main").read_text() == MIRROR_COMMIT
    assert job.progress["percent"] == 100.0
    assert job.result["bytes_transferred"] == placed.size
    assert "verified" in job.log_tail


def test_a_partial_file_resumes_with_range_and_complete_files_are_skipped(
    ctx, live_server, tiny, node_and_key, tmp_path, tiny_model_dir
):
    node, credential = node_and_key
    data_dir = tmp_path / "agent"
    weights = ModelFile.objects.get(model=tiny.model, path="model.safetensors")
    blobs = repo_dir(data_dir) / "blobs"
    blobs.mkdir(parents=True)
    have = 700_000
    original = (tiny_model_dir / "model.safetensors").read_bytes()
    (blobs / f"{weights.sha256}.incomplete").write_bytes(original[:have])

    with counting_proxy(live_server.url) as (proxy, counted):
        job = put(ctx, tiny, node)
        run_job(job.pk, client_for(proxy, credential), data_dir, proxy)
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job.error
        assert counted.ranges("model.safetensors") == [f"bytes={have}-"]
        total = sum(f.size for f in tiny.files.all())
        assert counted.resolve_bytes() == total - have
        assert f"resuming at {have}" in job.log_tail

        # present on disk but forgotten by the control plane: nothing is fetched again
        NodeModel.objects.all().delete()
        before = counted.resolve_bytes()
        again = put(ctx, tiny, node)
        run_job(again.pk, client_for(proxy, credential), data_dir, proxy)
        again.refresh_from_db()
        assert again.state == JobState.SUCCEEDED
        assert counted.resolve_bytes() == before
        assert again.result["bytes_transferred"] == 0
        assert "every file is already present" in again.log_tail
    assert NodeModel.objects.get(node=node).state == NodeModel.State.PRESENT


def test_cancel_stops_the_transfer_and_removes_partial_files(
    ctx, live_server, tiny, node_and_key, tmp_path
):
    node, credential = node_and_key
    data_dir = tmp_path / "agent"
    with counting_proxy(live_server.url) as (proxy, counted):
        counted.rate_bps = 400_000  # ~6 s for the model
        job = put(ctx, tiny, node)
        runner = threading.Thread(
            target=run_job, args=(job.pk, client_for(proxy, credential), data_dir, proxy)
        )
        runner.start()
        wait_until(
            lambda: (Job.objects.get(pk=job.pk).progress or {}).get("bytes_done", 0) > 100_000,
            15,
            message="no progress reported",
        )
        job_services.request_cancel(ctx, Job.objects.get(pk=job.pk))
        runner.join(timeout=15)
        assert not runner.is_alive()
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert not list(repo_dir(data_dir).rglob("*.incomplete"))
    assert not NodeModel.objects.exists()
    assert counted.resolve_bytes() < sum(f.size for f in tiny.files.all())


def test_a_job_of_another_node_is_not_claimable(ctx, live_server, tiny, node_and_key, tmp_path):
    node, _ = node_and_key
    job = put(ctx, tiny, node)
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name="other")
    _, other_credential = fleet_services.join_node(join_key=key, name="other-node")

    outcome = run_job(
        job.pk, client_for(live_server.url, other_credential), tmp_path / "x", live_server.url
    )

    assert outcome == "skipped"
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED


# --- straight from upstream: the bad cases --------------------------------------------------
@pytest.fixture
def bad_model(ctx, settings, upstream_hub, transactional_db) -> CatalogModel:
    settings.FLEET_HF_ENDPOINT = upstream_hub
    return import_variant(ctx, BAD).model


def test_corrupt_bytes_fail_with_a_checksum_message_and_nothing_is_present(
    ctx, live_server, bad_model, node_and_key, tmp_path
):
    node, credential = node_and_key
    variant = variant_with(bad_model, "corrupt", ["config.json", "corrupt.bin"])
    job = put(ctx, variant, node, source="upstream")
    data_dir = tmp_path / "agent"

    run_job(job.pk, client_for(live_server.url, credential), data_dir, live_server.url)

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error.startswith("Checksum mismatch for corrupt.bin")
    assert "nothing was marked present" in job.error
    assert "downloading it once more" in job.log_tail
    assert not NodeModel.objects.exists()
    corrupt = ModelFile.objects.get(model=bad_model, path="corrupt.bin")
    assert not (repo_dir(data_dir, BAD) / "blobs" / corrupt.sha256).exists()
    assert not (
        repo_dir(data_dir, BAD) / "snapshots" / bad_model.commit_sha / "corrupt.bin"
    ).exists()


@pytest.mark.parametrize("bad_path", ["../escape.txt", "/etc/passwd", "x/../../../escape.txt"])
def test_a_path_leaving_the_data_dir_is_refused_and_nothing_is_written(
    ctx, live_server, bad_model, node_and_key, tmp_path, bad_path
):
    node, credential = node_and_key
    variant = variant_with(bad_model, "hostile", ["config.json"])
    variant.files.add(
        ModelFile.objects.create(
            model=bad_model, path=bad_path, size=20, sha256="a" * 64, blob_id="b" * 40
        )
    )
    job = put(ctx, variant, node, source="upstream")
    data_dir = tmp_path / "agent"
    before = set(tmp_path.rglob("*"))

    run_job(job.pk, client_for(live_server.url, credential), data_dir, live_server.url)

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "refusing to write outside the data dir" in job.error
    assert "Nothing was written" in job.error and repr(bad_path) in job.error
    assert not (repo_dir(data_dir, BAD) / "snapshots").exists(), "not even config.json"
    assert set(tmp_path.rglob("*")) - before <= {data_dir}
    assert not Path("/etc/passwd.incomplete").exists()


def test_a_gated_repository_upstream_without_a_token_says_what_to_do(
    ctx, live_server, settings, upstream_hub, node_and_key, tmp_path
):
    from core import services
    from tests.hubserver.fixtures import GATED, GATED_TOKEN

    settings.FLEET_HF_ENDPOINT = upstream_hub
    services.create_secret(ctx, name="hf-gated", value=GATED_TOKEN)
    variant = import_variant(ctx, GATED, secret_name="hf-gated")
    node, credential = node_and_key
    job = put(ctx, variant, node, source="upstream")
    services.delete_secret(ctx, services.Secret.objects.get(name="hf-gated"))  # type: ignore[attr-defined]
    CatalogModel.objects.filter(pk=variant.model_id).update(secret_name="")

    run_job(job.pk, client_for(live_server.url, credential), tmp_path / "a", live_server.url)

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "is gated" in job.error and "Accept the model's terms" in job.error
    assert job.attempts == 1


# --- disks ------------------------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs-{len(mounts)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (these tests run as root): {done.stderr!r}")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_not_enough_disk_space_fails_before_downloading(
    ctx, live_server, tiny, node_and_key, tmpfs
):
    node, credential = node_and_key
    data_dir = tmpfs("1m")
    job = put(ctx, tiny, node)

    run_job(job.pk, client_for(live_server.url, credential), data_dir, live_server.url)

    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error.startswith("Not enough disk space on unit-node")
    assert "free in" in job.error and "retry the job" in job.error
    assert (
        not list((data_dir / "hub").rglob("*.incomplete")) if (data_dir / "hub").exists() else True
    )
    assert not NodeModel.objects.exists()


def test_a_disk_filling_up_mid_download_fails_cleanly_and_resumes_after_retry(
    ctx, live_server, tiny, node_and_key, tmpfs
):
    node, credential = node_and_key
    data_dir = tmpfs("4m")
    with counting_proxy(live_server.url) as (proxy, counted):
        counted.rate_bps = 1_000_000
        job = put(ctx, tiny, node)
        runner = threading.Thread(
            target=run_job, args=(job.pk, client_for(proxy, credential), data_dir, proxy)
        )
        runner.start()
        wait_until(
            lambda: (
                (Job.objects.get(pk=job.pk).progress or {}).get("current_file")
                == "model.safetensors"
                and Job.objects.get(pk=job.pk).progress.get("bytes_done", 0) > 600_000
            ),
            20,
            interval=0.05,
            message="the weights never started",
        )
        filler = data_dir / "filler"
        with filler.open("wb") as handle:  # another process eats the disk
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
        runner.join(timeout=20)
        job.refresh_from_db()
        assert job.state == JobState.FAILED, job.log_tail
        assert "filled up while downloading model.safetensors" in job.error
        assert "The partial file is kept" in job.error
        partials = list(repo_dir(data_dir).rglob("*.incomplete"))
        assert len(partials) == 1 and partials[0].stat().st_size > 0
        kept = partials[0].stat().st_size
        assert not NodeModel.objects.exists()

        filler.unlink()
        job_services.retry(ctx, job)
        run_job(job.pk, client_for(proxy, credential), data_dir, proxy)
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job.error
        assert counted.ranges("model.safetensors")[-1] == f"bytes={kept}-"
    assert NodeModel.objects.get().state == NodeModel.State.PRESENT


# --- deleting from the node -------------------------------------------------------------------
def test_delete_files_keeps_blobs_another_snapshot_uses(tmp_path: Path) -> None:
    repo = repo_dir(tmp_path)
    commit = "c" * 40
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "shared").write_bytes(b"config")
    (blobs / "weights").write_bytes(b"w" * 1000)
    snap = repo / "snapshots" / commit
    (snap / "sub").mkdir(parents=True)
    os.symlink("../../blobs/shared", snap / "config.json")
    os.symlink("../../../blobs/weights", snap / "sub" / "w.bin")

    result = delete_files(tmp_path, TINY, commit, ["sub/w.bin"])

    assert result == {"removed_files": 1, "freed_bytes": 1000}
    assert (blobs / "shared").exists() and not (blobs / "weights").exists()
    assert not (snap / "sub").exists()

    delete_files(tmp_path, TINY, commit, ["config.json"])
    assert not repo.exists(), "the last snapshot gone: the repository folder goes"
    with pytest.raises(DownloadError):
        delete_files(tmp_path, TINY, commit, ["../x"])


def test_wait_job_helper_reports_the_log(ctx, tiny, node_and_key) -> None:
    node, _ = node_and_key
    job = put(ctx, tiny, node)
    with pytest.raises(AssertionError, match="is queued"):
        wait_job(job.pk, timeout=0.3)


def test_a_dropped_connection_resumes_with_range_within_the_job(
    ctx, live_server, settings, hub_root, node_and_key, tmp_path
):
    from tests.hubserver.fixtures import FAIL_AFTER_BYTES
    from tests.hubserver.server import HubApp, run_in_thread

    app = HubApp(hub_root)
    url, stop = run_in_thread(hub_root, app=app)
    try:
        settings.FLEET_HF_ENDPOINT = url
        model = import_variant(ctx, BAD).model
        variant = variant_with(model, "weights", ["model.safetensors"])
        node, credential = node_and_key
        job = put(ctx, variant, node, source="upstream")
        app.log.clear()

        run_job(job.pk, client_for(live_server.url, credential), tmp_path / "a", live_server.url)

        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job.error
        ranges = [r for m, p, r in app.log if m == "GET" and p.endswith("/model.safetensors")]
        assert ranges == [None, f"bytes={FAIL_AFTER_BYTES}-"]
        assert f"connection dropped at {FAIL_AFTER_BYTES} bytes; resuming" in job.log_tail
        assert job.result["bytes_transferred"] == variant.size
    finally:
        stop()
