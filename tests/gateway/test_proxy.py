"""The gateway in front of real llama.cpp replicas, used through the official openai client.

The replicas are llama-server containers with the tiny GGUF; the deployment rows point at
them as the reconciler would once they are available. The app under test is the product's
ASGI application served by uvicorn (the gateway embedded as in the web process).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import openai
import pytest
import requests
from django.conf import settings
from django.test import Client as DjangoClient
from prometheus_client import REGISTRY

from core.history import ChangeContext
from gateway import services
from gateway.models import UsageDay
from tests.gateway.support import (
    LlamaReplicas,
    ServedApp,
    add_replica,
    local_node,
    routed_deployment,
    wait,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

MESSAGES = [{"role": "user", "content": "Hello"}]


def client_for(served: ServedApp, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0, **options)


def usage_rows(key_id: int) -> dict[str, tuple[int, int, int, int]]:
    return {
        row.deployment: (row.requests, row.errors, row.prompt_tokens, row.completion_tokens)
        for row in UsageDay.objects.filter(key_id=key_id)
    }


def test_openai_client_completes_streams_and_spreads(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    ports = [replicas.start("chat"), replicas.start("chat")]
    node = local_node("gw-node")
    deployment = routed_deployment(operator_user, "chat", node, ports)
    replica_ids = {str(r.pk) for r in deployment.replicas.all()}
    key, secret = services.create_key(ctx, name="app")
    client = client_for(served, secret)

    # models: the deployment is listed
    assert [m.id for m in client.models.list().data] == ["chat"]
    assert client.models.retrieve("chat").id == "chat"

    reported_prompt = reported_completion = 0
    seen: Counter[str] = Counter()
    for _ in range(12):
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, max_tokens=6
        )
        seen[raw.headers["x-fleet-replica"]] += 1
        completion = raw.parse()
        assert completion.choices[0].message is not None
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        reported_prompt += completion.usage.prompt_tokens
        reported_completion += completion.usage.completion_tokens
    assert set(seen) == replica_ids, seen  # both replicas served requests

    text = client.completions.create(model="chat", prompt="Once upon", max_tokens=5)
    assert text.usage is not None and text.usage.completion_tokens > 0
    reported_prompt += text.usage.prompt_tokens
    reported_completion += text.usage.completion_tokens

    # streaming without asking for usage: chunks arrive as produced, no usage chunk leaks
    chunks = list(
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8, stream=True)
    )
    assert len(chunks) >= 2
    assert all(chunk.choices for chunk in chunks), "the usage-only chunk must not be passed on"
    assert any(chunk.choices[0].delta.content for chunk in chunks if chunk.choices)

    # streaming asking for usage: the runtime's figures come through, and are recorded
    streamed = list(
        client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    final = [c for c in streamed if c.usage is not None]
    assert len(final) == 1 and final[0].usage is not None
    reported_prompt += final[0].usage.prompt_tokens
    reported_completion += final[0].usage.completion_tokens

    # usage adds up to what the runtime reported (the first stream's tokens counted too)
    def recorded() -> bool:
        row = usage_rows(key.pk).get("chat")
        return row is not None and row[0] == 15

    wait(recorded, 10, message=lambda: usage_rows(key.pk))
    _, errors, prompt, completion = usage_rows(key.pk)["chat"]
    assert errors == 0
    assert prompt > reported_prompt  # plus the stream that did not ask for usage
    assert completion > reported_completion
    first_stream_prompt = prompt - reported_prompt
    first_stream_completion = completion - reported_completion
    assert first_stream_prompt > 0 and 0 < first_stream_completion <= 8

    # the usage API and its totals agree
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {_api_token(operator_user)}"
    totals = api.get(f"{served.url}/api/v1/gateway/usage/totals/?deployment=chat").json()
    assert totals["prompt_tokens"] == prompt and totals["completion_tokens"] == completion

    # Prometheus series in the default registry (what the control plane's /metrics exports)
    def sample(name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, labels)
        return value or 0.0

    assert sample("slm_gateway_requests_total", deployment="chat", key="app", status="2xx") >= 15
    assert sample("slm_gateway_request_duration_seconds_count", deployment="chat") >= 15
    assert sample("slm_gateway_tokens_total", deployment="chat", key="app", kind="completion") > 0
    assert sample("slm_gateway_in_flight_requests", deployment="chat") == 0

    # live figures reach the console's endpoint (each gateway publishes every 2 s)
    def live() -> bool:
        figures = api.get(f"{served.url}/api/v1/gateway/live/").json()
        return any(
            row["deployment"] == "chat" and row["requests"] >= 15 for row in figures["deployments"]
        )

    wait(live, 6)
    browser = DjangoClient()
    browser.force_login(operator_user)
    page = browser.get("/gateway/live/")
    assert page.status_code == 200 and 'data-deployment="chat"' in page.content.decode()


def _api_token(user: Any) -> str:
    from core import services as core_services

    _, key = core_services.create_token(
        ChangeContext.for_user(user), owner=user, name=f"gw-{time.monotonic_ns()}", scope="write"
    )
    return key


def test_bad_input_answers_in_openai_shape(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    node = local_node("gw-node")
    routed_deployment(operator_user, "chat", node, [replicas.start("chat")])
    routed_deployment(operator_user, "empty", node, [])  # no replica at all
    _, secret = services.create_key(ctx, name="app")
    _, narrow = services.create_key(ctx, name="narrow", all_models=False, allowed_models=["empty"])
    client = client_for(served, secret)

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client_for(served, narrow).chat.completions.create(model="chat", messages=MESSAGES)
    assert "may not use the model 'chat'" in denied.value.message
    assert [m.id for m in client_for(served, narrow).models.list().data] == ["empty"]

    with pytest.raises(openai.AuthenticationError):
        client_for(served, "slmk_not-a-key").models.list()

    with pytest.raises(openai.InternalServerError) as unavailable:
        client.chat.completions.create(model="empty", messages=MESSAGES)
    assert unavailable.value.status_code == 503
    assert int(unavailable.value.response.headers["retry-after"]) >= 1

    url = f"{served.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    malformed = requests.post(url, data=b'{"model": "chat", ', headers=auth, timeout=10)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_json"

    limit = settings.FLEET_GATEWAY_MAX_BODY_BYTES
    big = json.dumps({"model": "chat", "prompt": "x" * (limit + 10)}).encode()
    too_large = requests.post(url, data=big, headers=auth, timeout=10)
    assert too_large.status_code == 413
    assert str(limit) in too_large.json()["error"]["message"]

    def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed_big = requests.post(url, data=chunks(), headers=auth, timeout=10)
    assert streamed_big.status_code == 413

    no_model = requests.post(url, json={"messages": MESSAGES}, headers=auth, timeout=10)
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


def test_rate_limits_answer_429_with_retry_after(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    routed_deployment(operator_user, "chat", local_node("gw-node"), [replicas.start("chat")])
    _, secret = services.create_key(ctx, name="limited", requests_per_minute=2)
    client = client_for(served, secret)
    # the window is one UTC minute: do not start right at its end
    if 60 - time.time() % 60 < 5:
        time.sleep(6)
    for _ in range(2):
        client.completions.create(model="chat", prompt="Hi", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model="chat", prompt="Hi", max_tokens=2)
    retry = int(refused.value.response.headers["retry-after"])
    assert 1 <= retry <= 60
    assert "2 requests per minute" in refused.value.message

    _, tokens_key = services.create_key(ctx, name="tokens", tokens_per_minute=5)
    tokens_client = client_for(served, tokens_key)
    tokens_client.completions.create(model="chat", prompt="Hello there", max_tokens=6)

    def over() -> bool:  # the finished request's tokens reach the window in the background
        try:
            tokens_client.completions.create(model="chat", prompt="Hi", max_tokens=1)
        except openai.RateLimitError as exc:
            return "5 tokens per minute" in exc.message
        return False

    wait(over, 5)


def test_dead_replica_is_ejected_and_no_request_fails(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    first, second = replicas.start("chat"), replicas.start("chat")
    node = local_node("gw-node")
    deployment = routed_deployment(operator_user, "chat", node, [first, second])
    victim = deployment.replicas.get(host_port=second)
    _, secret = services.create_key(ctx, name="app")
    client = client_for(served, secret)
    served_by: Counter[str] = Counter()
    for round_ in range(30):
        if round_ == 5:
            replicas.kill(second)  # its container goes away while requests keep coming
        raw = client.completions.with_raw_response.create(model="chat", prompt="Hi", max_tokens=3)
        assert raw.http_response.status_code == 200
        if round_ >= 5:
            served_by[raw.headers["x-fleet-replica"]] += 1
    assert served_by == {str(deployment.replicas.get(host_port=first).pk): 25}
    assert victim.pk in served.gateway().pool.ejected()

    # the replica comes back on its port: the probe lets it rejoin the pool
    replicas.start("chat", port=second)

    def rejoined() -> bool:
        raw = client.completions.with_raw_response.create(model="chat", prompt="Hi", max_tokens=2)
        return raw.headers["x-fleet-replica"] == str(victim.pk)

    wait(rejoined, 20)


def test_client_disconnect_mid_stream_cancels_upstream_and_records_usage(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    port = replicas.start("chat", parallel=1)
    routed_deployment(operator_user, "chat", local_node("gw-node"), [port])
    key, secret = services.create_key(ctx, name="app")
    response = requests.post(
        f"{served.url}/v1/completions",
        json={
            "model": "chat",
            "prompt": "Tell a long story",
            "max_tokens": 400,
            "stream": True,
            "ignore_eos": True,
        },
        headers={"Authorization": f"Bearer {secret}"},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200
    lines = response.iter_lines()
    received = 0
    for line in lines:
        if line.startswith(b"data:"):
            received += 1
        if received >= 3:
            break
    response.close()  # the client goes away mid-stream

    def metric(name: str) -> float:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for row in text.splitlines():
            if row.startswith(name + " ") or row.startswith(name + "{"):
                return float(row.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in the runtime's metrics")

    wait(lambda: metric("llamacpp:requests_processing") == 0, 10)
    predicted = metric("llamacpp:tokens_predicted_total")
    assert predicted < 400, "the runtime kept generating for a client that left"

    def recorded() -> bool:
        row = usage_rows(key.pk).get("chat")
        return row is not None and row[0] == 1 and row[3] >= 3

    wait(recorded, 10, message=lambda: usage_rows(key.pk))
    # the replica serves the next request at once (its slot was freed)
    client_for(served, secret).completions.create(model="chat", prompt="Hi", max_tokens=2)


def test_alias_routes_by_weight_and_changes_apply_at_once(
    served: ServedApp, replicas: LlamaReplicas, operator_user: Any
):
    ctx = ChangeContext.for_user(operator_user)
    node = local_node("gw-node")
    stable = routed_deployment(operator_user, "chat-r1", node, [replicas.start("chat-r1")])
    canary = routed_deployment(operator_user, "chat-r2", node, [replicas.start("chat-r2")])
    alias = services.create_alias(
        ctx,
        name="chat",
        targets=[{"deployment": "chat-r1", "weight": 3}, {"deployment": "chat-r2", "weight": 1}],
    )
    key, secret = services.create_key(ctx, name="app", all_models=False, allowed_models=["chat"])
    client = client_for(served, secret)
    hits: Counter[str] = Counter()
    for _ in range(40):
        raw = client.completions.with_raw_response.create(model="chat", prompt="Hi", max_tokens=1)
        hits[raw.headers["x-fleet-deployment"]] += 1
    assert hits["chat-r1"] > hits["chat-r2"] > 0, hits

    services.update_alias(ctx, alias, targets=[{"deployment": "chat-r2", "weight": 1}])
    for _ in range(5):  # no wait: the change is announced to the gateway on commit
        raw = client.completions.with_raw_response.create(model="chat", prompt="Hi", max_tokens=1)
        assert raw.headers["x-fleet-deployment"] == "chat-r2"

    # the key lists only the alias; usage is per deployment actually used
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model="chat-r1", prompt="Hi", max_tokens=1)
    wait(lambda: set(usage_rows(key.pk)) == {"chat-r1", "chat-r2"}, 10)
    assert stable.pk and canary.pk

    # a replica added to a deployment joins the pool within the refresh period
    add_replica(canary, node, 1, replicas.start("chat-r2"))

    def both() -> bool:
        seen = {
            client.completions.with_raw_response.create(
                model="chat", prompt="Hi", max_tokens=1
            ).headers["x-fleet-replica"]
            for _ in range(12)
        }
        return len(seen) == 2

    wait(both, 10)


def test_revoked_key_is_refused_at_once(served: ServedApp, operator_user: Any):
    ctx = ChangeContext.for_user(operator_user)
    key, secret = services.create_key(ctx, name="app")
    client = client_for(served, secret)
    assert client.models.list().data == []
    services.revoke_key(ctx, key)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_embeddings_pass_through(served: ServedApp, replicas: LlamaReplicas, operator_user: Any):
    ctx = ChangeContext.for_user(operator_user)
    port = replicas.start("embed", extra=("--embeddings", "--pooling", "mean"))
    routed_deployment(operator_user, "embed", local_node("gw-node"), [port])
    key, secret = services.create_key(ctx, name="app")
    answer = client_for(served, secret).embeddings.create(model="embed", input="Hello there")
    assert len(answer.data) == 1 and len(answer.data[0].embedding) > 8
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    wait(lambda: usage_rows(key.pk).get("embed", (0, 0, 0, 0))[2] == answer.usage.prompt_tokens)
