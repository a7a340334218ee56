"""Re-sync shows what changed upstream since the pin; re-pin moves the pin."""

from __future__ import annotations

import pytest

from core.errors import PreconditionFailed
from core.models import HistoryEvent
from models_catalog import services
from models_catalog.models import CatalogModel

pytestmark = pytest.mark.django_db


def test_resync_is_up_to_date_when_nothing_moved(hub, ctx, moving_repo):
    model = services.import_model(ctx, repo_id=moving_repo["repo_id"])
    diff = services.resync(ctx, model)
    assert diff["up_to_date"] is True
    assert diff["pinned_commit"] == diff["upstream_commit"] == moving_repo["commits"][0]
    assert diff["files"] == {"added": [], "removed": [], "changed": []}
    assert diff["config"] == {}
    model.refresh_from_db()
    assert model.last_synced_at is not None


def test_resync_diff_then_repin(hub, ctx, moving_repo):
    model = services.import_model(ctx, repo_id=moving_repo["repo_id"])
    first, second = moving_repo["commits"]
    old_config = model.files.get(path="config.json")
    moving_repo["point_main_at"](1)

    diff = services.resync(ctx, model)
    assert diff["up_to_date"] is False
    assert (diff["pinned_commit"], diff["upstream_commit"]) == (first, second)
    assert [f["path"] for f in diff["files"]["added"]] == ["NOTES.md"]
    assert [f["path"] for f in diff["files"]["removed"]] == ["tokenizer.json"]
    (changed,) = diff["files"]["changed"]
    assert changed["path"] == "config.json"
    assert changed["before"]["sha256"] == old_config.sha256 != changed["after"]["sha256"]
    before_max = model.max_context
    assert diff["config"] == {
        "max_position_embeddings": {"before": before_max, "after": before_max * 2}
    }
    model.refresh_from_db()
    assert model.commit_sha == first and model.upstream_commit_sha == second  # not moved yet
    assert not HistoryEvent.objects.filter(verb="repinned").exists()

    with pytest.raises(PreconditionFailed):
        services.repin(ctx, model, expected_version=model.version + 1, commit=second)

    repinned = services.repin(ctx, model, expected_version=model.version, commit=second)
    assert repinned.commit_sha == second
    assert repinned.max_context == before_max * 2
    assert repinned.version == model.version + 1
    paths = set(repinned.files.values_list("path", flat=True))
    assert "NOTES.md" in paths and "tokenizer.json" not in paths
    assert repinned.files.get(path="config.json").sha256 == changed["after"]["sha256"]
    original = repinned.variants.get(name="original")
    assert "tokenizer.json" not in set(original.files.values_list("path", flat=True))
    event = HistoryEvent.objects.get(verb="repinned", target_id=str(model.pk))
    assert event.changes["commit_sha"] == {"before": first, "after": second}
    assert event.changes["files_added"]["after"] == ["NOTES.md"]
    assert event.changes["files_removed"]["after"] == ["tokenizer.json"]
    assert event.changes["config"]["after"] == ["max_position_embeddings"]
    assert services.resync(ctx, repinned)["up_to_date"] is True


def test_repin_without_a_commit_takes_the_upstream_head(hub, ctx, moving_repo):
    model = services.import_model(ctx, repo_id=moving_repo["repo_id"])
    moving_repo["point_main_at"](1)
    repinned = services.repin(ctx, model, expected_version=None)
    assert repinned.commit_sha == moving_repo["commits"][1]


def test_delete_model_removes_files_and_variants_with_history(hub, ctx, moving_repo):
    model = services.import_model(ctx, repo_id=moving_repo["repo_id"])
    pk = model.pk
    services.delete_model(ctx, model)
    assert not CatalogModel.objects.filter(pk=pk).exists()
    assert HistoryEvent.objects.filter(verb="deleted", target_id=str(pk)).exists()
