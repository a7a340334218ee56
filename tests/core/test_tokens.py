"""Personal API tokens: shown once, stored hashed, scoped, expiring, revocable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from core import services
from core.choices import TokenScope
from core.history import ChangeContext
from core.models import ApiToken, HistoryEvent

pytestmark = pytest.mark.django_db


def test_create_returns_key_once_and_stores_only_its_hash(api_client_for, operator_user):
    response = api_client_for("operator").post(
        "/api/v1/tokens/", {"name": "ci", "scope": "write", "reason": "pipeline"}, format="json"
    )
    assert response.status_code == 201, response.json()
    key = response.json()["key"]
    assert key.startswith("slmf_") and len(key) > 40
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert token.key_hash == ApiToken.hash_key(key)
    assert key not in {token.key_hash, token.key_prefix}
    assert key.startswith(token.key_prefix)
    # never shown again
    again = api_client_for("operator").get(f"/api/v1/tokens/{token.pk}/").json()
    assert "key" not in again and again["key_prefix"] == token.key_prefix
    event = HistoryEvent.objects.get(target_type="core.apitoken", target_id=str(token.pk))
    assert event.verb == "created" and event.reason == "pipeline"
    assert key not in str(event.changes)


def test_bearer_token_authenticates_and_records_last_use(bearer_client, token_for, operator_user):
    key = token_for(operator_user, TokenScope.READ)
    response = bearer_client(key).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json() == {
        "id": operator_user.pk,
        "username": "oscar",
        "role": "operator",
        "token_scope": "read",
    }
    assert ApiToken.objects.get(user=operator_user).last_used_at is not None


def test_last_use_is_written_at_most_once_per_period(
    bearer_client, token_for, operator_user, settings
):
    settings.FLEET_TOKEN_LAST_USED_RESOLUTION = 60
    key = token_for(operator_user)
    client = bearer_client(key)
    with freeze_time("2026-01-01 10:00:00"):
        client.get("/api/v1/me/")
    with freeze_time("2026-01-01 10:00:30"):
        client.get("/api/v1/me/")
    assert ApiToken.objects.get().last_used_at.isoformat().startswith("2026-01-01T10:00:00")
    with freeze_time("2026-01-01 10:01:01"):
        client.get("/api/v1/me/")
    assert ApiToken.objects.get().last_used_at.isoformat().startswith("2026-01-01T10:01:01")


def test_read_scope_cannot_write(bearer_client, token_for, operator_user):
    key = token_for(operator_user, TokenScope.READ)
    response = bearer_client(key).post(
        "/api/v1/secrets/", {"name": "x", "value": "y"}, format="json"
    )
    assert response.status_code == 403
    assert "read scope" in response.json()["detail"]


def test_write_scope_cannot_exceed_the_owners_role(bearer_client, token_for, operator_user):
    key = token_for(operator_user, TokenScope.WRITE)
    response = bearer_client(key).get("/api/v1/users/")
    assert response.status_code == 403
    assert "needs the admin role" in response.json()["detail"]


def test_viewer_cannot_create_write_tokens(api_client_for):
    response = api_client_for("viewer").post("/api/v1/tokens/", {"name": "w", "scope": "write"})
    assert response.status_code == 400
    assert response.json()["errors"]["scope"]


def test_revoked_token_stops_at_once(bearer_client, token_for, operator_user, api_client_for):
    key = token_for(operator_user)
    client = bearer_client(key)
    assert client.get("/api/v1/me/").status_code == 200
    token = ApiToken.objects.get(user=operator_user)
    assert api_client_for("operator").delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert ApiToken.objects.get(pk=token.pk).get_status() == "revoked"
    assert HistoryEvent.objects.filter(verb="revoked", target_id=str(token.pk)).exists()


def test_expired_token_is_refused(bearer_client, operator_user):
    _, key = services.create_token(
        ChangeContext.for_user(operator_user),
        owner=operator_user,
        name="short",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert bearer_client(key).get("/api/v1/me/").status_code == 200
    with freeze_time(timezone.now() + timedelta(hours=2)):
        assert bearer_client(key).get("/api/v1/me/").status_code == 401


def test_expiry_in_the_past_is_refused(api_client_for):
    response = api_client_for("operator").post(
        "/api/v1/tokens/", {"name": "old", "expires_at": "2000-01-01T00:00:00Z"}, format="json"
    )
    assert response.status_code == 400
    assert "future" in response.json()["errors"]["expires_at"][0]


def test_token_of_a_deactivated_user_stops_working(bearer_client, token_for, operator_user):
    key = token_for(operator_user)
    operator_user.is_active = False
    operator_user.save()
    assert bearer_client(key).get("/api/v1/me/").status_code == 401


def test_token_never_accepted_in_the_query_string(client, token_for, operator_user):
    key = token_for(operator_user)
    for param in ("token", "access_token", "api_key", "key"):
        assert client.get(f"/api/v1/me/?{param}={key}").status_code == 401


def test_malformed_and_unknown_bearer_values(bearer_client):
    assert bearer_client("slmf_unknown").get("/api/v1/me/").status_code == 401
    client = bearer_client("x")
    client.credentials(HTTP_AUTHORIZATION="Bearer a b")
    response = client.get("/api/v1/me/")
    assert response.status_code == 401 and "Malformed" in response.json()["detail"]


def test_duplicate_active_names_conflict_but_revoked_names_are_reusable(api_client_for):
    client = api_client_for("operator")
    first = client.post("/api/v1/tokens/", {"name": "dup"}).json()
    conflict = client.post("/api/v1/tokens/", {"name": "dup"})
    assert conflict.status_code == 409
    client.delete(f"/api/v1/tokens/{first['id']}/")
    assert client.post("/api/v1/tokens/", {"name": "dup"}).status_code == 201


def test_admin_lists_everyones_tokens_others_only_their_own(api_client_for, token_for, personas):
    for persona in ("admin", "operator", "viewer"):
        token_for(personas[persona], TokenScope.READ, name=f"{persona}-t")
    admin_names = {
        t["name"] for t in api_client_for("admin").get("/api/v1/tokens/").json()["results"]
    }
    assert {"admin-t", "operator-t", "viewer-t"} <= admin_names
    viewer_names = {
        t["name"] for t in api_client_for("viewer").get("/api/v1/tokens/").json()["results"]
    }
    assert viewer_names == {"viewer-t"}
