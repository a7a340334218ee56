"""Agents' metric batches through the real ASGI app (fast path) and the DRF view.

The fast path writes from its own thread, so these tests use a transactional database.
"""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from monitoring.models import Sample, Series
from tests.fleet.test_nodes_asgi import call
from tests.monitoring.support import (
    batch,
    deployment,
    joined_node,
    now_ms,
    replica_on,
    round_,
    variant,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("metrics_fastpath")]

METRICS = "/api/v1/agent/metrics/"


@database_sync_to_async
def world(admin_user):
    node, credential = joined_node("gpu-a")
    other, _ = joined_node("gpu-b")
    gguf = variant()
    chat = deployment(admin_user, "chat", gguf)
    mine = replica_on(node, chat, 0)
    theirs = replica_on(other, chat, 1, port=20002)
    return node, credential, chat, mine, theirs


@database_sync_to_async
def stored() -> dict[tuple[int, str, str], list[float]]:
    out: dict[tuple[int, str, str], list[float]] = {}
    for sample in Sample.objects.select_related("series").order_by("ts"):
        key = (sample.series.replica_id, sample.series.name, sample.series.device)
        out.setdefault(key, []).append(sample.value)
    return out


async def post(body: dict, credential: str | None):
    return await call("POST", METRICS, body=json.dumps(body).encode(), credential=credential)


async def test_a_batch_is_stored_once_even_when_sent_twice(admin_user):
    node, credential, chat, mine, _ = await world(admin_user)
    t0 = now_ms(-10)
    body = batch(
        round_(
            t0,
            node={
                "cpu_percent": 40.0,
                "memory_used_bytes": 3 * 2**30,
                "gpus": [{"index": 0, "gpu_utilization_percent": 55, "gpu_temperature_c": 61}],
            },
            replicas=[(mine.pk, {"generated_tokens_per_s": 31.5, "requests_running": 2})],
        ),
        round_(t0 + 5000, replicas=[(mine.pk, {"generated_tokens_per_s": 28.0})]),
    )
    answer = await post(body, credential)
    assert answer.status == 200, answer.body
    assert answer.json() == {
        "accepted": 9,
        "duplicates": 0,
        "rejected": 0,
        "rejected_reasons": [],
    }
    values = await stored()
    assert values[(mine.pk, "generated_tokens_per_s", "")] == [31.5, 28.0]
    assert values[(0, "gpu_utilization_percent", "0")] == [55.0]
    assert values[(0, "cpu_percent", "")] == [40.0, 12.5]

    again = await post(body, credential)  # the agent timed out and sends the batch again
    assert again.status == 200
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 9
    assert await stored() == values
    series = await database_sync_to_async(
        lambda: Series.objects.get(replica_id=mine.pk, name="generated_tokens_per_s")
    )()
    assert series.deployment_id == chat.pk and series.node_id == node.pk


async def test_values_that_cannot_be_stored_are_listed_and_the_rest_kept(admin_user):
    _, credential, _, mine, theirs = await world(admin_user)
    body = batch(
        round_(
            now_ms(),
            replicas=[
                (mine.pk, {"generated_tokens_per_s": 3.0, "tokens_per_fortnight": 1}),
                (theirs.pk, {"generated_tokens_per_s": 9.0}),  # not on this node
            ],
        ),
        round_(now_ms(-3 * 86400)),  # older than the raw retention
    )
    answer = await post(body, credential)
    assert answer.status == 200, answer.body
    result = answer.json()
    assert result["accepted"] == 3  # node cpu + memory, mine's tokens/s
    assert result["rejected"] == 3
    reasons = " | ".join(result["rejected_reasons"])
    assert "unknown metric 'tokens_per_fortnight'" in reasons
    assert f"replica {theirs.pk} is not on this node" in reasons
    assert "older than the raw samples kept" in reasons
    values = await stored()
    assert values[(mine.pk, "generated_tokens_per_s", "")] == [3.0]
    assert (theirs.pk, "generated_tokens_per_s", "") not in values


async def test_a_malformed_batch_is_refused_whole_with_reasons(admin_user):
    _, credential, _, mine, _ = await world(admin_user)
    body = batch(
        round_(now_ms(), replicas=[(mine.pk, {"requests_running": 1})]),
        {"t": "yesterday", "replicas": []},
    )
    answer = await post(body, credential)
    assert answer.status == 400
    assert answer.json()["errors"] == {
        "rounds[1].t": "must be the collection time in epoch milliseconds"
    }
    assert await stored() == {}
    not_json = await call("POST", METRICS, body=b"{nope", credential=credential)
    assert not_json.status == 400 and not_json.json()["code"] == "parse_error"


async def test_without_a_node_credential_nothing_is_stored(admin_user):
    await world(admin_user)
    body = batch(round_(now_ms()))
    for credential in (None, "slmn_not-a-real-one"):
        answer = await post(body, credential)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="agent"'
    assert await stored() == {}


def test_the_drf_view_stores_the_same_way(admin_user):
    node, credential = joined_node("cpu-c")
    chat = deployment(admin_user, "chat2", variant())
    mine = replica_on(node, chat)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    body = batch(round_(now_ms(), replicas=[(mine.pk, {"kv_cache_usage": 0.25})]))
    answer = client.post(METRICS, body, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["accepted"] == 3
    assert Sample.objects.filter(series__name="kv_cache_usage").get().value == 0.25
    refused = APIClient().post(METRICS, body, format="json")
    assert refused.status_code == 401


def test_a_too_large_batch_is_refused_with_what_to_do(admin_user, settings):
    settings.FLEET_METRICS_MAX_BYTES = 65536
    _node, credential = joined_node("cpu-d")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    figures = {"cpu_percent": 1.5, "memory_used_bytes": 2**34, "disk_used_bytes": 2**40}
    rounds = [round_(now_ms(-i), node=figures) for i in range(1000)]  # ~100 kB
    answer = client.post(METRICS, batch(*rounds), format="json")
    assert answer.status_code == 413
    assert "send fewer rounds" in answer.json()["detail"]
    assert not Sample.objects.exists()
