"""The control-side cache job: upstream hub → fleet store, with the real test hub.

The job row is created by the service (its Celery message is not sent: these tests do not
commit), then run by ``caching.run`` as the control worker's task would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import job_services, services
from core.history import ChangeContext
from core.jobs import Job, JobKind, JobState
from core.models import HistoryEvent
from models_catalog import caching, downloads, store
from models_catalog import services as models_services
from models_catalog.models import CatalogModel, ModelFile, Variant
from tests.downloads_support import import_variant, variant_with
from tests.hubserver.fixtures import (
    BAD,
    FAIL_AFTER_BYTES,
    GATED,
    GATED_TOKEN,
    PRIVATE,
    PRIVATE_TOKEN,
    TINY,
)
from tests.hubserver.server import HubApp, run_in_thread

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_hub(settings: Any, hub_root: Path) -> Iterator[HubApp]:
    """A test hub of this test's own, whose request log (method, path, Range) we read."""
    app = HubApp(hub_root)
    url, stop = run_in_thread(hub_root, app=app)
    settings.FLEET_HF_ENDPOINT = url
    yield app
    stop()


@pytest.fixture
def store_dir(settings: Any, tmp_path: Path) -> Path:
    settings.FLEET_MODEL_STORE = tmp_path / "store"
    return Path(settings.FLEET_MODEL_STORE)


def run_cache(ctx: ChangeContext, variant: Variant) -> Job:
    job = downloads.cache_variant(ctx, variant)
    assert job.state == JobState.QUEUED
    caching.run(job.pk, owner="worker:test")
    return Job.objects.get(pk=job.pk)


def gets(app: HubApp, path: str) -> list[tuple[str, str, str | None]]:
    return [entry for entry in app.log if entry[0] == "GET" and entry[1].endswith("/" + path)]


def test_cache_job_fills_the_store_with_verified_files(ctx, hub, store_dir):
    variant = import_variant(ctx, TINY)
    files = list(variant.files.all())
    assert all(not store.has_blob(f.sha256) for f in files)

    job = run_cache(ctx, variant)

    assert job.state == JobState.SUCCEEDED, job.error
    assert job.kind == JobKind.CACHE_VARIANT and job.node is None
    for f in files:
        assert store.has_blob(f.sha256)
        assert store.sha256_of(store.blob_path(f.sha256)) == f.sha256
    assert job.result["fetched"] == len(files)
    assert job.result["bytes_transferred"] == sum(f.size for f in files)
    assert job.progress["percent"] == 100.0
    assert job.progress["bytes_total"] == variant.size or sum(f.size for f in files)
    assert "model.safetensors: stored and verified" in job.log_tail
    assert job.attempts == 1 and job.started_at and job.finished_at
    verbs = list(
        HistoryEvent.objects.filter(target_type="core.job", target_id=str(job.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )
    assert verbs == ["created", "started", "succeeded"]
    assert not list((store_dir / "incoming").glob("*/*")), "no partial files stay behind"


def test_a_cached_variant_completes_at_once(ctx, hub, store_dir):
    variant = import_variant(ctx, TINY)
    run_cache(ctx, variant)

    again = downloads.cache_variant(ctx, variant)

    assert again.state == JobState.SUCCEEDED
    assert again.result["already_cached"] is True
    assert downloads.ensure_cached(ctx, variant) is None


def test_a_dropped_connection_resumes_with_a_range_request(ctx, logged_hub, store_dir):
    model = import_variant(ctx, BAD).model
    variant = variant_with(model, "weights", ["model.safetensors"])
    logged_hub.log.clear()

    job = run_cache(ctx, variant)

    assert job.state == JobState.SUCCEEDED, job.error
    requests = gets(logged_hub, "model.safetensors")
    assert [r[2] for r in requests] == [None, f"bytes={FAIL_AFTER_BYTES}-"]
    weights = ModelFile.objects.get(model=model, path="model.safetensors")
    assert store.has_blob(weights.sha256)
    assert job.result["bytes_transferred"] == weights.size
    assert "resuming" in job.log_tail


def test_corrupt_bytes_fail_with_a_checksum_message_and_nothing_is_stored(
    ctx, logged_hub, store_dir
):
    model = import_variant(ctx, BAD).model
    variant = variant_with(model, "corrupt", ["config.json", "corrupt.bin"])
    corrupt = ModelFile.objects.get(model=model, path="corrupt.bin")
    logged_hub.log.clear()

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert job.error.startswith("Checksum mismatch for corrupt.bin")
    assert "twice in a row" in job.error and "nothing was stored" in job.error
    assert len(gets(logged_hub, "corrupt.bin")) == 2, "downloaded once more before giving up"
    assert not store.has_blob(corrupt.sha256)
    assert not store.blob_path(corrupt.sha256).exists()


@pytest.mark.parametrize("bad_path", ["../escape.txt", "/etc/passwd", "a/../../x"])
def test_a_path_leaving_the_store_is_refused_before_anything_is_fetched(
    ctx, logged_hub, store_dir, tmp_path, bad_path
):
    model = import_variant(ctx, BAD).model
    row = ModelFile.objects.create(
        model=model, path=bad_path, size=12, sha256="a" * 64, blob_id="b" * 40
    )
    variant = variant_with(model, "hostile", ["config.json"])
    variant.files.add(row)
    logged_hub.log.clear()

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert "refusing" in job.error and "Nothing was written" in job.error
    assert repr(bad_path) in job.error
    assert not [entry for entry in logged_hub.log if entry[0] == "GET"], "nothing fetched"
    assert not (tmp_path / "escape.txt").exists()
    assert not list(tmp_path.rglob("escape.txt"))


def _catalog_row(repo_id: str, commit: str, **fields: Any) -> Variant:
    model = CatalogModel.objects.create(repo_id=repo_id, commit_sha=commit, **fields)
    row = ModelFile.objects.create(
        model=model, path="config.json", size=10, sha256="c" * 64, blob_id="d" * 40
    )
    variant = Variant.objects.create(model=model, name="original", format="safetensors", size=10)
    variant.files.add(row)
    return variant


def test_an_unknown_repository_fails_with_an_actionable_message(ctx, hub, store_dir):
    variant = _catalog_row("fleet-test/no-such-repo", "1" * 40)

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert "fleet-test/no-such-repo was not found" in job.error
    assert "Check the name" in job.error
    assert job.attempts == 1, "not found is not retried"


def test_an_unknown_revision_fails_with_an_actionable_message(ctx, hub, store_dir):
    variant = _catalog_row(TINY, "f" * 40)

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert f"{TINY} has no revision" in job.error
    assert "name a branch, tag or commit that exists" in job.error


def _import_with_token(ctx: ChangeContext, repo_id: str, token: str) -> Variant:
    name = f"hf-{repo_id.split('/')[1]}"
    services.create_secret(ctx, name=name, value=token)
    model = models_services.import_model(ctx, repo_id=repo_id, secret_name=name)
    return model.variants.first() or variant_with(model, "config", ["config.json"])


def test_a_gated_model_without_its_token_fails_and_succeeds_on_retry_with_it(ctx, hub, store_dir):
    variant = _import_with_token(ctx, GATED, GATED_TOKEN)
    model = variant.model
    model.secret_name = ""
    model.save()

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert "is gated" in job.error and "token" in job.error

    model.secret_name = "hf-gated-model"
    model.save()
    job = job_services.retry(ctx, job)
    assert job.state == JobState.QUEUED and job.attempts == 0
    caching.run(job.pk, owner="worker:test")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert all(store.has_blob(f.sha256) for f in variant.files.all())


def test_a_private_model_without_its_token_fails_with_an_actionable_message(ctx, hub, store_dir):
    variant = _import_with_token(ctx, PRIVATE, PRIVATE_TOKEN)
    CatalogModel.objects.filter(pk=variant.model_id).update(secret_name="")

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert "private" in job.error and "token" in job.error


def test_a_missing_secret_is_named_in_the_error(ctx, hub, store_dir):
    variant = _import_with_token(ctx, GATED, GATED_TOKEN)
    CatalogModel.objects.filter(pk=variant.model_id).update(secret_name="gone-secret")

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert "gone-secret" in job.error


@pytest.fixture
def tiny_store(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """The store on a 1 MiB tmpfs (we run as root in CI and here)."""
    mount = tmp_path / "tiny-store"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests run as root): {done.stderr!r}")
    settings.FLEET_MODEL_STORE = mount
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_not_enough_disk_space_is_said_before_anything_is_downloaded(ctx, logged_hub, tiny_store):
    variant = import_variant(ctx, TINY)
    logged_hub.log.clear()

    job = run_cache(ctx, variant)

    assert job.state == JobState.FAILED
    assert job.error.startswith("Not enough disk space in the fleet store")
    assert "MiB" in job.error and "Free space there" in job.error
    assert not [entry for entry in logged_hub.log if entry[0] == "GET"]


def test_cancel_stops_the_job_and_removes_partial_files(ctx, hub, store_dir):
    variant = import_variant(ctx, TINY)
    job = downloads.cache_variant(ctx, variant)
    claimed = job_services.claim(job.pk, "worker:test")
    assert claimed is not None
    job_services.request_cancel(ctx, claimed)
    partial = store.root() / "incoming" / variant.files.first().sha256  # type: ignore[union-attr]
    partial.mkdir(parents=True)
    (partial / "x.incomplete").write_bytes(b"partial")

    assert caching.run(job.pk, owner="worker:test") == "cancelled"

    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert not partial.exists()
    assert not any(store.has_blob(f.sha256) for f in variant.files.all())
