"""Idempotency-Key on the API's POSTs (core/idempotency.py): a retry gets the first answer and
the change is made once; another request under the same key is a 422; concurrent retries
wait for the first and replay it. Real PostgreSQL, the real API, a live server for the races."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from core.idempotency import IdempotencyRecord, purge_expired
from core.models import HistoryEvent
from deployments.models import Deployment
from tests.deployments.builders import gguf_variant, spec

URL = "/api/v1/deployments/"


def body(variant: Any, name: str = "qwen", replicas: int = 1) -> dict[str, Any]:
    return {"name": name, "spec": spec(variant, replicas=replicas), "reason": "launch"}


def created_events(name: str) -> int:
    return HistoryEvent.objects.filter(
        target_type="deployments.deployment", target_name=name, verb="created"
    ).count()


@pytest.mark.django_db
def test_a_retry_gets_the_first_answer_and_the_change_is_made_once(
    operator_user, token_for, bearer_client
):
    client = bearer_client(token_for(operator_user))
    request = body(gguf_variant())
    first = client.post(URL, request, format="json", HTTP_IDEMPOTENCY_KEY="create-qwen-1")
    assert first.status_code == 201, first.json()
    again = client.post(URL, request, format="json", HTTP_IDEMPOTENCY_KEY="create-qwen-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["ETag"] == first["ETag"]
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert Deployment.objects.filter(name="qwen").count() == 1
    assert created_events("qwen") == 1
    # Without the key the same body is a new request (here: refused, the name is taken).
    assert client.post(URL, request, format="json").status_code == 409


@pytest.mark.django_db
def test_the_same_key_with_another_request_is_refused_and_changes_nothing(
    api_client_for,
):
    client = api_client_for("operator")
    variant = gguf_variant()
    assert (
        client.post(URL, body(variant), format="json", HTTP_IDEMPOTENCY_KEY="k-1").status_code
        == 201
    )
    other = client.post(URL, body(variant, name="other"), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422
    assert "used with another request (POST /api/v1/deployments/)" in other.json()["detail"]
    assert not Deployment.objects.filter(name="other").exists()


@pytest.mark.django_db
def test_keys_belong_to_their_user_and_bad_keys_are_refused(api_client_for, personas):
    variant = gguf_variant()
    operator = api_client_for("operator")
    admin = api_client_for("admin")
    assert operator.post(URL, body(variant, "a"), format="json", HTTP_IDEMPOTENCY_KEY="same")
    second = admin.post(URL, body(variant, "b"), format="json", HTTP_IDEMPOTENCY_KEY="same")
    assert second.status_code == 201 and not second.has_header("Idempotent-Replayed")
    assert set(Deployment.objects.values_list("name", flat=True)) == {"a", "b"}
    for bad in ("", "x" * 256, "with space", "naïve"):
        answer = operator.post(URL, body(variant, "c"), format="json", HTTP_IDEMPOTENCY_KEY=bad)
        assert answer.status_code == 400, bad
        assert "Idempotency-Key must be" in answer.json()["detail"]
    assert not Deployment.objects.filter(name="c").exists()
    # Permissions are unchanged: anonymous is 401, a viewer 403, key or not.
    anonymous = api_client_for("anonymous")
    assert anonymous.post(
        URL, body(variant, "d"), format="json", HTTP_IDEMPOTENCY_KEY="z"
    ).status_code in (401, 403)
    viewer = api_client_for("viewer")
    assert (
        viewer.post(URL, body(variant, "d"), format="json", HTTP_IDEMPOTENCY_KEY="z").status_code
        == 403
    )
    assert not Deployment.objects.filter(name="d").exists()


@pytest.mark.django_db
def test_an_expired_key_runs_again_and_expired_records_are_purged(api_client_for):
    client = api_client_for("operator")
    variant = gguf_variant()
    client.post(URL, body(variant, "e1"), format="json", HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    again = client.post(URL, body(variant, "e2"), format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 201 and not again.has_header("Idempotent-Replayed")
    assert IdempotencyRecord.objects.get().path == URL
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert purge_expired() == 1
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_wait_for_the_first_and_replay_it(
    live_server, operator_user, token_for, settings
):
    settings.ALLOWED_HOSTS = ["*"]
    key = token_for(operator_user)
    request = body(gguf_variant(), name="racing", replicas=1)
    answers: list[requests.Response] = []
    start = threading.Barrier(4)

    def post() -> None:
        start.wait()
        answers.append(
            requests.post(
                f"{live_server.url}{URL}",
                json=request,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "race-1"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(a.status_code for a in answers) == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
    assert Deployment.objects.filter(name="racing").count() == 1
    assert created_events("racing") == 1
