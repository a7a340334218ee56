"""Console pages: the list with filters, the detail (replicas, rollouts, revisions with
diffs and rollback, events), the create and edit forms with per-runtime help and errors."""

from __future__ import annotations

import pytest
from django.test import Client

from core.history import ChangeContext
from deployments import services
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica, Rollout
from tests.deployments.builders import deploy, gguf_variant, node

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(operator_user) -> Client:
    client = Client()
    client.force_login(operator_user)
    return client


@pytest.fixture
def viewer_client(viewer_user) -> Client:
    client = Client()
    client.force_login(viewer_user)
    return client


def _running(user, name: str = "qwen-chat", *, spec_change: dict | None = None) -> Deployment:
    deployment = deploy(user, name, gguf_variant(), replicas=2)
    if spec_change:  # a second revision (its own pass runs as well)
        services.update_spec(
            ChangeContext.for_user(user, reason="longer prompts"), deployment, spec_change
        )
        deployment.refresh_from_db()
    deployment.replicas.all().delete()  # what the passes made: the rows are laid out here
    deployment.rollouts.all().delete()
    host = node("node-1")
    Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=0,
        node=host,
        host_port=20000,
        state=ReplicaState.AVAILABLE,
        restarts=2,
    )
    Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=1,
        state=ReplicaState.PENDING,
        reason="no node with 6.1 GB free VRAM; node-3 has 3.9 GB",
    )
    Rollout.objects.create(
        deployment=deployment,
        to_revision=deployment.current_revision,
        steps=[{"at": "12:00:01", "action": "started", "slot": 0}],
    )
    return deployment


def test_list_shows_status_revision_ready_nodes_and_endpoints(viewer_client, operator_user):
    _running(operator_user)
    stopped = deploy(operator_user, "stopped-one", gguf_variant())
    services.stop(ChangeContext.for_user(operator_user), stopped)
    page = viewer_client.get("/deployments/").content.decode()
    assert 'data-deployment="qwen-chat"' in page
    assert "progressing" in page and "r1" in page
    assert '<td data-testid="ready">1 / 2</td>' in page
    assert "node-1" in page and "http://node-1.example.net:20000" in page
    assert "New deployment" not in page, "viewers cannot create"
    filtered = viewer_client.get("/deployments/", {"status": "stopped"}).content.decode()
    assert 'data-deployment="stopped-one"' in filtered
    assert 'data-deployment="qwen-chat"' not in filtered


def test_empty_list_invites_operators_to_create(operator_client):
    page = operator_client.get("/deployments/").content.decode()
    assert "No deployments yet" in page and "/deployments/new/" in page


def test_detail_shows_replicas_rollouts_revisions_and_events(operator_client, operator_user):
    deployment = _running(operator_user, spec_change={"runtime_args": {"context_size": 8192}})
    page = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "no node with 6.1 GB free VRAM; node-3 has 3.9 GB" in page
    assert "http://node-1.example.net:20000" in page
    assert "12:00:01" in page and "started" in page
    assert 'data-revision="2"' in page and 'data-revision="1"' in page
    assert "runtime_args.context_size" in page and "8192" in page
    assert "longer prompts" in page
    assert 'value="rollback"' in page and 'name="revision" value="1"' in page
    assert 'name="revision" value="2"' not in page, "no rollback to the current revision"
    assert "updated" in page and "created" in page  # events


def test_detail_has_no_actions_for_viewers(viewer_client, operator_user):
    deployment = _running(operator_user)
    page = viewer_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'value="rollback"' not in page and "Edit spec" not in page


def test_detail_refresh_renders_the_live_part_only(viewer_client, operator_user):
    deployment = _running(operator_user)
    page = viewer_client.get(f"/deployments/{deployment.pk}/", HTTP_HX_REQUEST="true")
    body = page.content.decode()
    assert 'data-testid="replicas"' in body and "<html" not in body


def test_create_form_lists_each_runtimes_arguments(operator_client):
    page = operator_client.get("/deployments/new/").content.decode()
    for runtime in ("llamacpp", "vllm", "ollama", "custom"):
        assert f'data-runtime="{runtime}"' in page
    assert "context_size" in page and "tensor_parallel_size" in page


def test_create_posts_a_deployment(operator_client):
    variant = gguf_variant()
    response = operator_client.post(
        "/deployments/new/",
        {
            "name": "qwen-chat",
            "variant": variant.pk,
            "runtime": "llamacpp",
            "runtime_args": '{"ctx-size": 8192}',
            "replicas": 2,
            "memory": "2Gi",
            "selector": "zone=eu-1",
            "placement_strategy": "binpack",
            "env": "OMP_NUM_THREADS=4",
            "max_surge": 1,
            "max_unavailable": 0,
            "min_healthy_seconds": 10,
            "healthy_deadline_seconds": 300,
            "progress_deadline_seconds": 600,
            "auto_revert": "on",
            "revision_history_limit": 5,
            "reason": "launch",
        },
    )
    deployment = Deployment.objects.get(name="qwen-chat")
    assert response.status_code == 302
    assert response["Location"] == f"/deployments/{deployment.pk}/"
    spec = deployment.spec
    assert spec["runtime_args"] == {"context_size": 8192}
    assert spec["resources"]["memory_bytes"] == 2 * 1024**3
    assert spec["placement"] == {"selector": {"zone": "eu-1"}, "strategy": "binpack"}
    assert spec["env"] == {"OMP_NUM_THREADS": "4"}
    assert deployment.revision_history_limit == 5 and deployment.desired_replicas == 2


def test_create_shows_spec_errors_on_their_fields(operator_client):
    variant = gguf_variant()
    response = operator_client.post(
        "/deployments/new/",
        {
            "name": "qwen-chat",
            "variant": variant.pk,
            "runtime": "llamacpp",
            "runtime_args": '{"api_key": "x"}',
            "replicas": 1,
            "placement_strategy": "spread",
            "env": "HF_TOKEN=hf_abc",
            "max_surge": 1,
            "max_unavailable": 0,
            "min_healthy_seconds": 10,
            "healthy_deadline_seconds": 300,
            "progress_deadline_seconds": 600,
            "revision_history_limit": 10,
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "api_key: refused for llama.cpp" in page
    assert "HF_TOKEN: HF_TOKEN names a secret" in page
    assert not Deployment.objects.exists()


def test_edit_makes_a_revision_and_refuses_a_stale_form(operator_client, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    form = operator_client.get(f"/deployments/{deployment.pk}/edit/").content.decode()
    assert f'name="version" value="{deployment.version}"' in form
    data = {
        "variant": deployment.current_revision.variant_id,  # type: ignore[union-attr]
        "runtime": "llamacpp",
        "runtime_args": '{"parallel": 4}',
        "replicas": 1,
        "placement_strategy": "spread",
        "max_surge": 1,
        "max_unavailable": 0,
        "min_healthy_seconds": 10,
        "healthy_deadline_seconds": 300,
        "progress_deadline_seconds": 600,
        "auto_revert": "on",
        "revision_history_limit": 10,
        "version": deployment.version,
        "reason": "more slots",
    }
    response = operator_client.post(f"/deployments/{deployment.pk}/edit/", data)
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2  # type: ignore[union-attr]
    assert deployment.spec["runtime_args"] == {"parallel": 4}
    stale = operator_client.post(
        f"/deployments/{deployment.pk}/edit/", {**data, "runtime_args": "{}"}
    )
    assert stale.status_code == 400
    assert "changed by someone else" in stale.content.decode()
    # removing an argument in the form removes it (the form sends the whole spec)
    fresh = {**data, "runtime_args": "", "version": deployment.version}
    operator_client.post(f"/deployments/{deployment.pk}/edit/", fresh)
    deployment.refresh_from_db()
    assert deployment.spec["runtime_args"] == {}


def test_actions_scale_rollback_and_delete(operator_client, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    services.update_spec(
        ChangeContext.for_user(operator_user), deployment, {"runtime_args": {"parallel": 2}}
    )
    url = f"/deployments/{deployment.pk}/action/"
    assert operator_client.post(url, {"action": "scale", "replicas": 3}).status_code == 302
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 3
    operator_client.post(url, {"action": "rollback", "revision": 1, "reason": "bad"})
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 3  # type: ignore[union-attr]
    response = operator_client.post(url, {"action": "rollback", "revision": 3}, follow=True)
    assert "already the current revision" in response.content.decode()
    response = operator_client.post(url, {"action": "delete"})
    assert response["Location"] == "/deployments/"
    assert not Deployment.objects.filter(pk=deployment.pk).exists()


def test_a_revision_diff_and_its_history_event_name_the_variant(operator_client, operator_user):
    from core.models import HistoryEvent
    from models_catalog.models import ModelFile, Variant

    first = gguf_variant()
    weights = ModelFile.objects.create(
        model=first.model, path="qwen-q8_0.gguf", size=first.size, sha256="b" * 64
    )
    second = Variant.objects.create(
        model=first.model, name="qwen-q8_0.gguf", format="gguf", quantization="Q8_0", size=1000
    )
    second.files.set([weights])
    deployment = deploy(operator_user, "named-diff", first, replicas=1)
    services.update_spec(
        ChangeContext.for_user(operator_user, reason="q8"), deployment, {"variant": second.pk}
    )
    page = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert f"{first} (#{first.pk})" in page and f"{second} (#{second.pk})" in page
    event = HistoryEvent.objects.filter(
        target_type="deployments.deployment", target_id=str(deployment.pk), verb="updated"
    ).latest("id")
    assert event.changes["variant"] == {"before": first.pk, "after": second.pk}  # ids stored
    history = operator_client.get(f"/history/{event.pk}/").content.decode()
    assert f"{second} (#{second.pk})" in history


def test_charts_without_samples_show_one_message_and_no_frame(viewer_client, operator_user):
    deployment = _running(operator_user)
    page = viewer_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "No samples yet." in page
    # The plot's box stays hidden until charts.js has points to draw in it.
    assert 'data-chart="0"' in page and 'data-names="' in page
    chart_div = page[page.index('data-chart="0"') :].split(">", 1)[0]
    assert chart_div.endswith(" hidden"), chart_div


AUTOSCALING = {"enabled": True, "min_replicas": 1, "max_replicas": 3, "target": 2}


def test_autoscaled_deployments_on_the_list_and_detail_pages(
    operator_user, operator_client, viewer_client
):
    deployment = deploy(operator_user, "auto-chat", gguf_variant(), autoscaling=AUTOSCALING)
    for client in (operator_client, viewer_client):
        listed = client.get("/deployments/")
        assert listed.status_code == 200
        assert 'data-testid="autoscaled">autoscaled 1–3' in listed.content.decode()
        page = client.get(f"/deployments/{deployment.pk}/")
        assert page.status_code == 200
        html = page.content.decode()
        assert 'data-testid="autoscaling"' in html
        assert "autoscaled 1–3 on 2 concurrent requests per replica" in html
        assert f"/api/v1/deployments/{deployment.pk}/autoscaling/" in html
    # the scale form gives way to an explanation (a manual scale would be refused)
    html = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'data-action="scale"' not in html and 'data-testid="scale-off"' in html


def test_a_deployment_without_autoscaling_keeps_its_scale_form(operator_user, operator_client):
    deployment = deploy(operator_user, "fixed-chat", gguf_variant())
    html = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'data-action="scale"' in html and 'data-testid="autoscaling"' not in html


def test_the_autoscaling_card_shows_the_decision_and_why_replicas_wait(
    viewer_client, operator_user
):
    from deployments import autoscaler

    deployment = deploy(operator_user, "auto-chat", gguf_variant(), autoscaling=AUTOSCALING)
    url = f"/deployments/{deployment.pk}/"
    card = viewer_client.get(url).content.decode().split('data-testid="autoscaling"', 1)[1]
    card = card.split("</section>", 1)[0]
    assert "Manual scaling is off while autoscaling is on" in card
    assert "None yet" in card and "No samples yet." in card
    assert "data-autoscaling-charts hidden" in card, "no empty chart frames before samples"
    assert "data-autoscaling-blocked hidden" in card
    reason = "no node with 6.1 GB free VRAM; node-3 has 3.9 GB"
    last = {"at": 1_000_000.0, "mode": "panic", "stable": 3.5, "panic": 7.25, "target": 2.0}
    last |= {"desired": 3, "ready": 1, "reason": "panic: 7.25 over 6 s", "blocked": reason}
    autoscaler.State(blocked=reason, chart=[[1_000_000.0, 3, 1, 7.25]], last=last).save(deployment)
    card = viewer_client.get(url).content.decode().split('data-testid="autoscaling"', 1)[1]
    card = card.split("</section>", 1)[0]
    assert f'New replicas wait for a node: <span data-field="blocked">{reason}</span>' in card
    assert "data-autoscaling-blocked hidden" not in card
    assert 'badge badge-warn" data-field="mode">panic<' in card
    assert 'data-field="desired">3<' in card and 'data-field="ready">1<' in card
    assert 'data-field="panic">7.25<' in card and 'data-field="at">13:46:40<' in card
