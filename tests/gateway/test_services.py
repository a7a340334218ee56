"""Keys and aliases: validation, history, hashing, and the change announcement."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from core.errors import ConflictError, PreconditionFailed, ServiceError
from core.history import ChangeContext
from core.models import HistoryEvent
from gateway import invalidation, services
from gateway.models import AccessKey, UsageDay
from gateway.table import load_table
from gateway.usage import write_usage
from tests.gateway.support import add_replica, local_node, routed_deployment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


def test_keys_are_hashed_shown_once_and_recorded(ctx: ChangeContext):
    key, secret = services.create_key(
        ctx, name="app", all_models=False, allowed_models=["b", "a", "a"], requests_per_minute=5
    )
    assert secret.startswith("slmk_") and key.key_prefix == secret[:11]
    stored = AccessKey.objects.get(pk=key.pk)
    assert stored.key_hash == AccessKey.hash_key(secret) and secret not in str(stored.__dict__)
    assert stored.allowed_models == ["a", "b"]
    event = HistoryEvent.objects.get(target_type="gateway.accesskey", target_id=str(key.pk))
    assert event.verb == "created" and secret not in str(event.changes)
    with pytest.raises(ConflictError):
        services.create_key(ctx, name="app")
    with pytest.raises(ServiceError, match="at least 1"):
        services.create_key(ctx, name="x", tokens_per_minute=0)
    with pytest.raises(ServiceError, match="at least one model"):
        services.create_key(ctx, name="y", all_models=False)
    with pytest.raises(ServiceError, match="future"):
        services.create_key(ctx, name="z", expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(PreconditionFailed):
        services.update_key(ctx, key, expected_version=key.version + 1, tokens_per_minute=9)
    key = services.update_key(ctx, key, expected_version=key.version, tokens_per_minute=9)
    assert key.tokens_per_minute == 9 and key.version == 2
    services.revoke_key(ctx, key)
    assert AccessKey.objects.usable().count() == 0
    services.create_key(ctx, name="app")  # the name is free again once revoked


def test_aliases_check_targets_and_record_them(ctx: ChangeContext, operator_user: Any):
    node = local_node("n1")
    routed_deployment(operator_user, "d1", node, [])
    routed_deployment(operator_user, "d2", node, [])
    with pytest.raises(ServiceError, match="no deployment named 'nope'"):
        services.create_alias(ctx, name="a", targets=[{"deployment": "nope"}])
    with pytest.raises(ServiceError, match="at least one target"):
        services.create_alias(ctx, name="a", targets=[])
    with pytest.raises(ServiceError, match="above 0"):
        services.create_alias(ctx, name="a", targets=[{"deployment": "d1", "weight": 0}])
    with pytest.raises(ServiceError, match="0 to 1000"):
        services.create_alias(ctx, name="a", targets=[{"deployment": "d1", "weight": 1001}])
    with pytest.raises(ConflictError, match="deployment's name"):
        services.create_alias(ctx, name="d1", targets=[{"deployment": "d2"}])
    alias = services.create_alias(
        ctx, name="a", targets=[{"deployment": "d1", "weight": 9}, {"deployment": "d2"}]
    )
    alias = services.update_alias(ctx, alias, targets=[{"deployment": "d2", "weight": 1}])
    event = HistoryEvent.objects.filter(target_type="gateway.alias").first()
    assert event is not None and event.verb == "updated"
    assert event.changes["targets"]["before"] == [
        {"deployment": "d1", "weight": 9},
        {"deployment": "d2", "weight": 1},
    ]
    services.delete_alias(ctx, alias)
    assert HistoryEvent.objects.filter(target_type="gateway.alias", verb="deleted").exists()


def test_routing_table_holds_routable_replicas_keys_and_aliases(
    ctx: ChangeContext, operator_user: Any
):
    node = local_node("n1")
    deployment = routed_deployment(operator_user, "d1", node, [20001, 20002])
    stopping = add_replica(deployment, node, 2, 20003)
    stopping.state = "stopping"
    stopping.save()
    services.create_alias(ctx, name="a", targets=[{"deployment": "d1", "weight": 2}])
    key, secret = services.create_key(ctx, name="app")
    revoked, _ = services.create_key(ctx, name="old")
    services.revoke_key(ctx, revoked)
    table = load_table()
    assert [e.url for e in table.endpoints["d1"]] == [
        "http://127.0.0.1:20001",
        "http://127.0.0.1:20002",
    ]
    assert table.routes["a"].targets == (("d1", 2),) and table.routes["a"].is_alias
    assert set(table.keys) == {AccessKey.hash_key(secret)}
    assert table.keys[AccessKey.hash_key(secret)].id == key.pk


def test_changes_are_announced_on_commit(ctx: ChangeContext):
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(invalidation.CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    got: list[bytes] = []

    def listen() -> None:
        message = pubsub.get_message(timeout=5)
        while message is not None and message["type"] != "message":
            message = pubsub.get_message(timeout=5)
        if message is not None:
            got.append(message["data"])

    listener = threading.Thread(target=listen)
    listener.start()
    key, _ = services.create_key(ctx, name="app")
    listener.join(10)
    pubsub.close()
    client.close()
    assert got == [f"key {key.pk} created".encode()]


def test_usage_upserts_add_up(ctx: ChangeContext):
    key, _ = services.create_key(ctx, name="app")
    day = timezone.now().date()
    write_usage({(day, key.pk, "d1"): [1, 0, 10, 5]})
    write_usage({(day, key.pk, "d1"): [2, 1, 20, 7], (day, key.pk, "d2"): [1, 0, 3, 4]})
    rows = {r.deployment: r for r in UsageDay.objects.filter(key=key)}
    assert (rows["d1"].requests, rows["d1"].errors) == (3, 1)
    assert (rows["d1"].prompt_tokens, rows["d1"].completion_tokens) == (30, 12)
    assert rows["d2"].total_tokens == 7
