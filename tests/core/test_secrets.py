"""Encrypted secrets: never returned, never logged, rotatable without downtime."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from core import crypto, services
from core.history import ChangeContext
from core.models import HistoryEvent, Secret

pytestmark = pytest.mark.django_db
VALUE = "hf_abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def secret(operator_user) -> Secret:
    return services.create_secret(
        ChangeContext.for_user(operator_user), name="hf-main", kind="huggingface_token", value=VALUE
    )


def test_value_is_encrypted_at_rest(secret):
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext FROM core_secret WHERE id = %s", [secret.pk])
        (stored,) = cursor.fetchone()
    assert VALUE not in stored
    assert services.reveal_secret("hf-main") == VALUE


def test_api_never_returns_the_value(api_client_for, caplog):
    client = api_client_for("operator")
    with caplog.at_level(logging.DEBUG):
        created = client.post(
            "/api/v1/secrets/",
            {"name": "registry", "kind": "registry_credential", "value": VALUE, "reason": "ghcr"},
            format="json",
        )
    assert created.status_code == 201
    pk = created.json()["id"]
    for body in (
        created.content,
        client.get("/api/v1/secrets/").content,
        client.get(f"/api/v1/secrets/{pk}/").content,
    ):
        assert VALUE.encode() not in body
        assert b"ciphertext" not in body
    assert VALUE not in caplog.text
    event = HistoryEvent.objects.get(target_type="core.secret", verb="created")
    assert VALUE not in str(event.changes)
    assert event.changes["value"] == {"before": None, "after": "(redacted)"}


def test_update_value_with_if_match(api_client_for, secret):
    client = api_client_for("operator")
    etag = client.get(f"/api/v1/secrets/{secret.pk}/")["ETag"]
    assert etag == '"1"'
    response = client.patch(
        f"/api/v1/secrets/{secret.pk}/", {"value": "new-value"}, format="json", HTTP_IF_MATCH=etag
    )
    assert response.status_code == 200, response.json()
    assert response["ETag"] == '"2"'
    assert services.reveal_secret("hf-main") == "new-value"
    stale = client.patch(
        f"/api/v1/secrets/{secret.pk}/", {"description": "x"}, format="json", HTTP_IF_MATCH=etag
    )
    assert stale.status_code == 412
    assert "changed by someone else" in stale.json()["detail"]
    assert Secret.objects.get().description == ""
    event = HistoryEvent.objects.filter(target_type="core.secret", verb="updated").get()
    assert event.changes == {"value": {"before": "(redacted)", "after": "(redacted)"}}


def test_delete_records_history(api_client_for, secret):
    assert api_client_for("operator").delete(f"/api/v1/secrets/{secret.pk}/").status_code == 204
    assert not Secret.objects.exists()
    assert HistoryEvent.objects.filter(target_type="core.secret", verb="deleted").exists()


def test_duplicate_name_and_empty_value_are_refused(api_client_for, secret):
    client = api_client_for("operator")
    dup = client.post("/api/v1/secrets/", {"name": "hf-main", "value": "x"}, format="json")
    assert dup.status_code == 409 and dup.json()["errors"]["name"]
    empty = client.post("/api/v1/secrets/", {"name": "other", "value": ""}, format="json")
    assert empty.status_code == 400 and "value" in empty.json()["errors"]


def test_rotation_re_encrypts_under_the_new_first_key(secret, settings, capsys):
    old_key = settings.FLEET_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FLEET_ENCRYPTION_KEYS = [new_key, old_key]
    old_ciphertext = Secret.objects.get().ciphertext
    assert not crypto.is_current(old_ciphertext)
    assert services.reveal_secret("hf-main") == VALUE  # old key still decrypts meanwhile

    call_command("rotate_encryption_keys")
    assert "Re-encrypted 1 secret(s)" in capsys.readouterr().out
    rotated = Secret.objects.get().ciphertext
    assert rotated != old_ciphertext and crypto.is_current(rotated)

    settings.FLEET_ENCRYPTION_KEYS = [new_key]  # the old key can now go
    assert services.reveal_secret("hf-main") == VALUE
    assert HistoryEvent.objects.filter(verb="keys_rotated").count() == 1

    call_command("rotate_encryption_keys")  # a second run has nothing to do
    assert "Re-encrypted 0 secret(s)" in capsys.readouterr().out


def test_a_missing_key_gives_an_actionable_error(secret, settings):
    settings.FLEET_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.DecryptionError, match="FLEET_ENCRYPTION_KEYS"):
        services.reveal_secret("hf-main")


def test_secret_pages_never_echo_the_value(client, operator_user):
    client.force_login(operator_user)
    response = client.post(
        "/settings/secrets/",
        {"name": "page-secret", "kind": "generic", "value": VALUE, "description": ""},
        follow=True,
    )
    assert response.status_code == 200
    assert VALUE.encode() not in response.content
    assert b"page-secret" in response.content
    # a failing form does not render the value back either
    response = client.post(
        "/settings/secrets/", {"name": "bad name!", "kind": "generic", "value": VALUE}
    )
    assert VALUE.encode() not in response.content
