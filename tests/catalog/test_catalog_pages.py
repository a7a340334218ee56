"""The catalog console pages, as an operator, a viewer and an admin see them."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from core import services as core_services
from core.choices import SecretKind
from core.history import ChangeContext
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog import services
from models_catalog.models import CatalogModel
from tests.hubserver.fixtures import GATED, GATED_TOKEN, TINY, TINY_GGUF

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response) -> str:
    return response.content.decode()


def active_nav(html: str) -> list[str]:
    return re.findall(r'class="active" data-nav="([\w-]+)"', html)


def test_empty_catalog_invites_an_import(operator_user, viewer_user):
    page = text(client_for(operator_user).get("/catalog/"))
    assert "The catalog is empty" in page and "/catalog/import/" in page
    assert "/catalog/import/" not in text(client_for(viewer_user).get("/catalog/"))


def test_import_form_imports_and_shows_the_model(hub, operator_user, hub_commits):
    client = client_for(operator_user)
    form = client.get("/catalog/import/")
    assert form.status_code == 200 and 'name="repo_id"' in text(form)
    response = client.post("/catalog/import/", {"repo_id": TINY, "reason": "try it"})
    model = CatalogModel.objects.get(repo_id=TINY)
    assert response.status_code == 302 and response["Location"] == f"/catalog/{model.pk}/"
    page = client.get(response["Location"])
    html = text(page)
    assert active_nav(html) == ["catalog"]
    assert hub_commits[TINY][-1] in html
    assert "541.3 K" in html and "safetensors metadata" in html  # parameters and source
    sha = model.files.get(path="tokenizer.model").sha256
    assert sha in html  # files with their sha256
    assert 'data-variant="original"' in html
    assert "vLLM (GPU), KV f16" in html  # the footprint table's columns
    assert "licence allowed" in html
    listing = text(client.get("/catalog/"))
    assert f">{TINY}</a>" in listing and "tiny" in listing


def test_gated_import_error_is_shown_on_the_form(hub, operator_user, admin_user):
    client = client_for(operator_user)
    response = client.post("/catalog/import/", {"repo_id": GATED})
    assert response.status_code == 200
    assert "is gated: accept its licence on huggingface.co" in text(response)
    core_services.create_secret(
        ChangeContext.for_user(admin_user),
        name="hf-gated",
        value=GATED_TOKEN,
        kind=SecretKind.HUGGINGFACE_TOKEN,
    )
    form = text(client.get(f"/catalog/import/?repo_id={GATED}"))
    assert '<option value="hf-gated">' in form and f'value="{GATED}"' in form
    ok = client.post("/catalog/import/", {"repo_id": GATED, "secret_name": "hf-gated"})
    assert ok.status_code == 302


def test_search_results_offer_import_buttons(hub, operator_user, viewer_user):
    services.import_model(ChangeContext.for_user(operator_user), repo_id=TINY)
    html = text(client_for(operator_user).get("/catalog/search/?q=tiny&sort=downloads"))
    assert f'data-repo="{TINY}"' in html and f'data-repo="{TINY_GGUF}"' in html
    assert html.index(TINY + '"') < html.index(TINY_GGUF)
    assert "In catalog" in html
    assert f'<input type="hidden" name="repo_id" value="{TINY_GGUF}">' in html
    viewer = text(client_for(viewer_user).get("/catalog/search/?q=tiny"))
    assert 'name="repo_id"' not in viewer
    empty = client_for(viewer_user).get("/catalog/search/")
    assert empty.status_code == 200 and "Search the hub" in text(empty)


def test_detail_shows_footprints_and_fits_on_with_reasons(hub, operator_user, settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["apache-2.0"]
    model = services.import_model(ChangeContext.for_user(operator_user), repo_id=TINY_GGUF)
    Node.objects.create(
        name="roomy",
        state=NodeState.READY,
        last_heartbeat_at=timezone.now(),
        credential_hash="a",
        inventory={"memory": {"available_bytes": 8_000_000_000}},
    )
    Node.objects.create(
        name="fenced",
        state=NodeState.READY,
        last_heartbeat_at=timezone.now(),
        credential_hash="b",
        cordoned=True,
        inventory={"memory": {"available_bytes": 8_000_000_000}},
    )
    html = text(client_for(operator_user).get(f"/catalog/{model.pk}/"))
    assert "licence mit is not in the allowed list" in html
    assert "llama.cpp (CPU), KV q8_0" in html and "Ollama (CPU), KV f16" in html
    assert 'data-node="roomy"' in html and "node is cordoned" in html
    assert "Q8_0" in html and "nominal 8.5" in html


def test_resync_page_and_repin_button(hub, operator_user, moving_repo):
    client = client_for(operator_user)
    model = services.import_model(
        ChangeContext.for_user(operator_user), repo_id=moving_repo["repo_id"]
    )
    moving_repo["point_main_at"](1)
    page = client.post(f"/catalog/{model.pk}/resync/")
    html = text(page)
    assert page.status_code == 200
    assert "NOTES.md" in html and "tokenizer.json" in html and "max_position_embeddings" in html
    assert 'data-action="repin"' in html
    commit = moving_repo["commits"][1]
    assert f'name="commit" value="{commit}"' in html
    done = client.post(
        f"/catalog/{model.pk}/repin/",
        {"commit": commit, "version": model.version, "reason": "new config"},
    )
    assert done.status_code == 302
    model.refresh_from_db()
    assert model.commit_sha == commit


def test_viewers_cannot_change_the_catalog(hub, operator_user, viewer_user):
    model = services.import_model(ChangeContext.for_user(operator_user), repo_id=TINY)
    viewer = client_for(viewer_user)
    html = text(viewer.get(f"/catalog/{model.pk}/"))
    assert 'data-action="resync"' not in html and 'data-action="delete"' not in html
    assert viewer.post(f"/catalog/{model.pk}/delete/").status_code == 403
    assert CatalogModel.objects.filter(pk=model.pk).exists()


def test_licence_policy_page(admin_user, viewer_user, settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["mit"]
    page = text(client_for(viewer_user).get("/catalog/licence-policy/"))
    assert active_nav(page) == ["settings"]
    assert "default list" in page and 'name="licences"' not in page
    admin = client_for(admin_user)
    assert 'name="licences"' in text(admin.get("/catalog/licence-policy/"))
    response = admin.post(
        "/catalog/licence-policy/", {"licences": "mit\napache-2.0", "version": "0"}
    )
    assert response.status_code == 302
    assert services.get_allowed_licences() == ["apache-2.0", "mit"]
    assert (
        client_for(viewer_user)
        .post("/catalog/licence-policy/", {"licences": "gpl-3.0", "version": "1"})
        .status_code
        == 403
    )
