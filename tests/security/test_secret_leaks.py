"""Secrets and tokens land nowhere they should not (issue 16).

The test makes one of each secret the product holds: a Hugging Face token stored as a secret,
a personal API token, a gateway access key, a join token and the node credential a join gives.
Then it uses them the way an operator would: it imports a gated model with the secret,
queues a download of it from upstream to the node and one into the fleet store, reads every
list and detail of what it made, and reads the history. Then it greps each place a secret could
land for every value:

- every API answer, except the single answer that hands a new key out, and the agent's job
  claim, which is the channel that carries the token to the node that downloads;
- the history (changes, reasons, names);
- everything in the broker's Redis database: Celery messages and their bindings, rate
  limiter and cache keys;
- every log record of the test, at DEBUG level.

Zero hits. `docker inspect` of managed containers is covered by the hardening watcher and
the fault suite: no secret is given to a replica.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from core.models import HistoryEvent
from fleet.models import Node
from tests.hubserver.fixtures import GATED, GATED_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)  # orders go to the broker on commit


def _redis_dump() -> str:
    """Every key and value of the broker's database, as text."""
    client = redis.Redis.from_url(str(settings.CELERY_BROKER_URL))
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        else:
            value = kind
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


def test_no_secret_lands_in_answers_history_broker_or_logs(
    upstream_hub: str,
    fleet_store: Any,
    settings: Any,
    admin_user: Any,
    token_for: Any,
    bearer_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.FLEET_HF_ENDPOINT = upstream_hub
    caplog.set_level(logging.DEBUG)
    admin = bearer_client(token_for(admin_user, name="leak-admin"))
    answers: list[str] = []

    def call(
        method: str, path: str, body: dict[str, Any] | None = None, *, hands_out: bool = False
    ):
        answer = getattr(admin, method)(path, body, format="json")
        assert answer.status_code < 300, (path, answer.status_code, answer.content[:500])
        if not hands_out:
            answers.append(answer.content.decode())
        return answer.json() if answer.content else None

    secrets = {"huggingface token": GATED_TOKEN}
    call(
        "post",
        "/api/v1/secrets/",
        {"name": "hf-gated", "kind": "huggingface_token", "value": GATED_TOKEN},
    )
    secrets["api token"] = call(
        "post", "/api/v1/tokens/", {"name": "leak", "scope": "write"}, hands_out=True
    )["key"]
    secrets["gateway key"] = call(
        "post", "/api/v1/gateway/keys/", {"name": "leak"}, hands_out=True
    )["key"]
    secrets["join token"] = call("post", "/api/v1/join-tokens/", {"name": "leak"}, hands_out=True)[
        "key"
    ]
    joined = APIClient().post(
        "/api/v1/agent/join/",
        {"join_token": secrets["join token"], "name": "leak-node", "inventory": {}},
        format="json",
    )
    assert joined.status_code == 201, joined.content
    secrets["node credential"] = joined.json()["credential"]
    node = Node.objects.get(name="leak-node")

    model = call("post", "/api/v1/catalog/models/", {"repo_id": GATED, "secret_name": "hf-gated"})
    variant = model["variants"][0]["id"] if model.get("variants") else None
    if variant is None:
        variant = call("get", f"/api/v1/catalog/models/{model['id']}/variants/")["results"][0]["id"]
    call(
        "post", "/api/v1/downloads/", {"variant": variant, "nodes": [node.pk], "source": "upstream"}
    )
    call("post", "/api/v1/downloads/cache/", {"variant": variant})
    for path in (
        "/api/v1/secrets/",
        "/api/v1/tokens/",
        "/api/v1/gateway/keys/",
        "/api/v1/join-tokens/",
        "/api/v1/nodes/",
        f"/api/v1/nodes/{node.pk}/",
        "/api/v1/catalog/models/",
        f"/api/v1/catalog/models/{model['id']}/",
        "/api/v1/jobs/",
        "/api/v1/history/?page_size=500",
        "/api/v1/me/",
    ):
        call("get", path)

    places = {
        "API answers": "\n".join(answers),
        "history": json.dumps(
            list(HistoryEvent.objects.values("changes", "reason", "target_name", "actor_detail")),
            default=str,
        ),
        "the broker (Redis)": _redis_dump(),
        "log records": "\n".join(
            f"{r.getMessage()} {r.args!r} {getattr(r, 'exc_text', '') or ''}"
            for r in caplog.records
        ),
    }
    hits = [
        f"the {what} ({value[:8]}…) appears in {where}"
        for what, value in secrets.items()
        for where, text in places.items()
        if value in text
    ]
    assert hits == [], hits
    from tests.fleet.agents import purge_node_queues

    purge_node_queues(str(settings.REDIS_URL), [node.pk])
    assert "slmj_" in places["API answers"]  # the answers were read (prefixes are shown)
    assert "fleet.agent.download" in places["the broker (Redis)"], "no download order was queued"
