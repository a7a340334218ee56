"""User management (admins) and the guards that keep an admin around."""

from __future__ import annotations

import pytest

from core.models import User

pytestmark = pytest.mark.django_db


def test_admin_creates_a_user_with_a_one_time_password(api_client_for, client):
    response = api_client_for("admin").post(
        "/api/v1/users/", {"username": "nina", "role": "operator"}
    )
    assert response.status_code == 201
    one_time = response.json()["one_time_password"]
    assert one_time and len(one_time) >= 16
    assert User.objects.get(username="nina").check_password(one_time)
    assert (
        "one_time_password"
        not in api_client_for("admin").get(f"/api/v1/users/{response.json()['id']}/").json()
    )


def test_weak_password_is_refused_per_field(api_client_for):
    response = api_client_for("admin").post(
        "/api/v1/users/", {"username": "weak", "password": "123"}
    )
    assert response.status_code == 400
    assert "password" in response.json()["errors"]
    assert not User.objects.filter(username="weak").exists()


def test_duplicate_user_name_conflicts(api_client_for):
    response = api_client_for("admin").post("/api/v1/users/", {"username": "OSCAR"})
    assert response.status_code == 409


def test_the_last_admin_cannot_be_demoted_or_deactivated(api_client_for, admin_user):
    client = api_client_for("admin")
    response = client.patch(f"/api/v1/users/{admin_user.pk}/", {"role": "viewer"}, format="json")
    assert response.status_code == 409
    assert "last active admin" in response.json()["detail"]
    response = client.patch(f"/api/v1/users/{admin_user.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 409
    assert User.objects.get(pk=admin_user.pk).role == "admin"


def test_if_match_guards_user_edits(api_client_for, viewer_user):
    client = api_client_for("admin")
    url = f"/api/v1/users/{viewer_user.pk}/"
    etag = client.get(url)["ETag"]
    assert (
        client.patch(url, {"role": "operator"}, format="json", HTTP_IF_MATCH=etag).status_code
        == 200
    )
    stale = client.patch(url, {"role": "admin"}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    garbage = client.patch(url, {"role": "admin"}, format="json", HTTP_IF_MATCH="nonsense")
    assert garbage.status_code == 412
    assert User.objects.get(pk=viewer_user.pk).role == "operator"


def test_user_pages(client, admin_user, viewer_user):
    client.force_login(admin_user)
    response = client.post("/settings/users/", {"username": "pam", "role": "viewer", "email": ""})
    assert response.status_code == 201
    assert b"one-time-password" in response.content
    edit = client.post(
        f"/settings/users/{viewer_user.pk}/",
        {
            "role": "operator",
            "is_active": "on",
            "version": viewer_user.version,
            "reason": "on call",
        },
    )
    assert edit.status_code == 302
    assert User.objects.get(pk=viewer_user.pk).role == "operator"
    stale = client.post(
        f"/settings/users/{viewer_user.pk}/",
        {"role": "viewer", "is_active": "on", "version": viewer_user.version},
    )
    assert stale.status_code == 200 and b"changed by someone else" in stale.content


def test_login_is_locked_after_repeated_failures(client, operator_user, password):
    for _ in range(5):
        response = client.post("/login/", {"username": "oscar", "password": "wrong-password"})
        assert response.status_code in (200, 429)
    locked = client.post("/login/", {"username": "oscar", "password": password})
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in client.session


def test_login_and_password_change(client, operator_user, password):
    response = client.post("/login/", {"username": "oscar", "password": password})
    assert response.status_code == 302 and response["Location"] == "/"
    change = client.post(
        "/settings/password/",
        {
            "old_password": password,
            "new_password1": "another-long-pass-77",
            "new_password2": "another-long-pass-77",
        },
    )
    assert change.status_code == 302
    assert User.objects.get(pk=operator_user.pk).check_password("another-long-pass-77")
    assert client.get("/").status_code == 200  # session kept after the change
