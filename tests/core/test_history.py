"""The team-shared history: append-only, filterable, with reasons, request ids and diffs."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from core import services
from core.history import ChangeContext
from core.models import AppendOnlyError, HistoryEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(operator_user) -> HistoryEvent:
    services.create_secret(ChangeContext.for_user(operator_user), name="s1", value="v")
    return HistoryEvent.objects.get()


def test_events_cannot_be_changed_through_the_orm(event):
    event.reason = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        HistoryEvent.objects.all().update(reason="x")
    with pytest.raises(AppendOnlyError):
        HistoryEvent.objects.all().delete()


def test_the_database_refuses_updates_and_deletes(event):
    for statement in (
        "UPDATE core_historyevent SET reason = 'x'",
        "DELETE FROM core_historyevent",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)
    assert HistoryEvent.objects.get().reason == ""


def test_api_has_no_write_path(api_client_for, event):
    client = api_client_for("admin")
    url = f"/api/v1/history/{event.pk}/"
    assert client.get(url).status_code == 200
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)(url, {}).status_code == 405
    assert client.post("/api/v1/history/", {}).status_code == 405


def test_mutating_calls_record_actor_reason_request_id_and_diff(api_client_for, admin_user):
    client = api_client_for("admin")
    created = client.post(
        "/api/v1/users/",
        {"username": "newbie", "role": "viewer"},
        format="json",
        HTTP_X_CHANGE_REASON="onboarding",
        HTTP_X_REQUEST_ID="req-42",
    ).json()
    client.patch(
        f"/api/v1/users/{created['id']}/",
        {"role": "operator", "reason": "promoted after training"},
        format="json",
    )
    updated = HistoryEvent.objects.get(verb="updated", target_type="core.user")
    assert updated.actor_type == "user" and updated.actor_name == "alice"
    assert updated.reason == "promoted after training"
    assert updated.changes == {"role": {"before": "viewer", "after": "operator"}}
    created_event = HistoryEvent.objects.get(verb="created", target_type="core.user")
    assert created_event.reason == "onboarding"
    assert created_event.request_id == "req-42"
    assert created_event.changes["username"] == {"before": None, "after": "newbie"}


def test_token_actions_name_the_token(bearer_client, token_for, operator_user):
    key = token_for(operator_user, name="automation")
    bearer_client(key).post("/api/v1/secrets/", {"name": "via-token", "value": "v"}, format="json")
    event = HistoryEvent.objects.get(target_type="core.secret")
    assert event.actor_type == "token"
    assert event.actor_name == "oscar"
    assert "automation" in event.actor_detail


def test_filters(api_client_for, operator_user, admin_user):
    services.create_secret(ChangeContext.for_user(operator_user), name="a", value="v")
    services.create_secret(ChangeContext.for_user(admin_user, reason="r"), name="b", value="v")
    client = api_client_for("viewer")

    def names(**params: str) -> list[str]:
        body = client.get("/api/v1/history/", params).json()
        return [event["target_name"] for event in body["results"]]

    assert names(actor="oscar") == ["a"]
    assert sorted(names(target_type="core.secret")) == ["a", "b"]
    assert names(verb="deleted") == []
    assert names(q="b") == ["b"]
    assert names(until="2000-01-01T00:00:00Z") == []
    assert len(names(since="2000-01-01T00:00:00Z")) == 2
    bad = client.get("/api/v1/history/", {"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["errors"]


def test_history_page_lists_filters_and_shows_a_diff(client, admin_user, operator_user):
    services.create_secret(
        ChangeContext.for_user(operator_user, reason="for the hub"), name="hf", value="v"
    )
    client.force_login(admin_user)
    page = client.get("/history/")
    assert b"hf" in page.content and b"for the hub" in page.content
    assert b"hf" not in client.get("/history/", {"actor": "nobody"}).content.split(b"<tbody")[1]
    event = HistoryEvent.objects.get()
    detail = client.get(f"/history/{event.pk}/")
    assert detail.status_code == 200
    assert b"diff-after" in detail.content and b"(redacted)" in detail.content
    partial = client.get("/history/", HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b"<table" in partial.content
