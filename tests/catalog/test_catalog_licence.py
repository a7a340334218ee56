"""The licence policy: default from settings, changed by admins with history, enforced."""

from __future__ import annotations

import pytest

from core.errors import PreconditionFailed, ServiceError
from core.history import ChangeContext
from core.models import HistoryEvent, Setting
from models_catalog import services
from models_catalog.models import CatalogModel, Variant

pytestmark = pytest.mark.django_db


@pytest.fixture
def llama_variant() -> Variant:
    model = CatalogModel.objects.create(
        repo_id="meta/llama", commit_sha="c" * 40, licence="llama3.2"
    )
    return Variant.objects.create(model=model, name="original", format="safetensors")


def test_default_policy_comes_from_settings(settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["MIT", "apache-2.0"]
    assert services.get_allowed_licences() == ["apache-2.0", "mit"]
    assert services.policy_as_dict()["is_default"] is True


def test_check_licence_names_the_refused_licence(llama_variant, settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["apache-2.0", "mit"]
    assert services.check_licence(llama_variant) == "licence llama3.2 is not in the allowed list"
    assert services.check_licence(llama_variant.model) == (
        "licence llama3.2 is not in the allowed list"
    )
    mit = CatalogModel.objects.create(repo_id="x/mit", commit_sha="d" * 40, licence="MIT")
    assert services.check_licence(mit) is None
    unknown = CatalogModel.objects.create(repo_id="x/none", commit_sha="e" * 40)
    assert "names no licence" in (services.check_licence(unknown) or "")


def test_admin_changes_the_policy_with_a_history_event(llama_variant, admin_user):
    ctx = ChangeContext.for_user(admin_user, reason="legal approved Llama")
    before = services.get_allowed_licences()
    setting = services.set_allowed_licences(ctx, [*before, "Llama3.2", " "], expected_version=0)
    assert setting.key == "catalog.allowed_licences" and setting.version == 1
    assert "llama3.2" in services.get_allowed_licences()
    assert services.check_licence(llama_variant) is None
    event = HistoryEvent.objects.get(target_type="core.setting", target_id=str(setting.pk))
    assert event.verb == "updated" and event.reason == "legal approved Llama"
    assert event.changes["licences"]["before"] == before
    assert "llama3.2" in event.changes["licences"]["after"]
    with pytest.raises(PreconditionFailed):
        services.set_allowed_licences(ctx, ["mit"], expected_version=0)
    services.set_allowed_licences(ctx, ["mit"], expected_version=1)
    assert Setting.objects.get(key="catalog.allowed_licences").value == {"licences": ["mit"]}
    with pytest.raises(ServiceError):
        services.set_allowed_licences(ctx, ["not a licence!"])
