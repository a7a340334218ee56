"""Node use cases against the database: join tokens, joining, credentials, heartbeats, liveness.

Fast (no processes, no network): everything goes through ``fleet.services`` and
``fleet.heartbeats`` the way the API views and the ASGI fast path call them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from core.choices import ActorType
from core.errors import ConflictError, ServiceError
from core.history import ChangeContext
from core.models import HistoryEvent
from fleet import services
from fleet.choices import CommandKind, CommandState, NodeCondition, NodeState
from fleet.heartbeats import (
    MAX_GPUS,
    HeartbeatResult,
    handle_heartbeat,
    ingest_batch,
    make_row,
)
from fleet.models import JoinToken, Node, NodeCommand, hash_secret
from tests.fleet.agents import heartbeat_payload

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def ctx(operator_user) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


def make_token(ctx: ChangeContext, **kwargs: Any) -> tuple[JoinToken, str]:
    kwargs.setdefault("name", "rack 7")
    return services.create_join_token(ctx, **kwargs)


def join(key: str, name: str) -> tuple[Node, str]:
    return services.join_node(join_key=key, name=name)


def beat(
    credential: str | None,
    payload: dict[str, Any] | None = None,
    *,
    raw: bytes | None = None,
    received_at: Any = None,
) -> HeartbeatResult:
    body = raw if raw is not None else json.dumps(payload or heartbeat_payload()).encode()
    return handle_heartbeat(credential, body, received_at or timezone.now())


def verbs(node: Node) -> list[str]:
    return list(
        HistoryEvent.objects.filter(target_type="fleet.node", target_id=str(node.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )


def last_event(node: Node, verb: str) -> HistoryEvent:
    event = (
        HistoryEvent.objects.filter(target_type="fleet.node", target_id=str(node.pk), verb=verb)
        .order_by("-id")
        .first()
    )
    assert event is not None, f"no {verb!r} event for {node.name}: {verbs(node)}"
    return event


@pytest.fixture
def ready_node(ctx) -> tuple[Node, str]:
    """A node that joined and sent one healthy heartbeat."""
    _, key = make_token(ctx)
    node, credential = join(key, "ready-1")
    result = beat(credential)
    assert result.status == 200, result.body
    node.refresh_from_db()
    assert node.state == NodeState.READY
    return node, credential


# --- Join tokens -----------------------------------------------------------------------------
def test_new_join_token_is_active_and_only_its_hash_is_stored(ctx):
    token, key = make_token(ctx, max_uses=2, labels={"zone": "eu-1"})

    assert key.startswith("slmj_") and len(key) > 40
    assert token.key_hash == hash_secret(key)
    assert token.key_prefix == key[:11]
    assert key not in json.dumps(list(JoinToken.objects.filter(pk=token.pk).values()), default=str)
    assert token.get_status() == "active"
    assert token.uses == 0 and token.max_uses == 2
    assert token.labels == {"zone": "eu-1"}
    assert token.expires_at > timezone.now() + timedelta(hours=23)
    created = HistoryEvent.objects.get(target_type="fleet.jointoken", target_id=str(token.pk))
    assert created.verb == "created" and created.actor_name == "oscar"


def test_join_token_statuses(ctx):
    token, key = make_token(ctx, max_uses=1, expires_at=timezone.now() + timedelta(hours=1))
    assert token.get_status() == "active"

    with freeze_time(token.expires_at - timedelta(seconds=1)):
        assert token.get_status() == "active"
    with freeze_time(token.expires_at):
        assert token.get_status() == "expired"

    join(key, "only-one")
    token.refresh_from_db()
    assert token.get_status() == "used up"

    services.revoke_join_token(ctx, token)
    token.refresh_from_db()
    assert token.get_status() == "revoked"
    assert "revoked" in verbs_of_token(token)


def verbs_of_token(token: JoinToken) -> list[str]:
    return list(
        HistoryEvent.objects.filter(target_type="fleet.jointoken", target_id=str(token.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"name": "   "}, "name", "Give the join token a name."),
        ({"max_uses": 0}, "max_uses", "at least one use"),
        ({"expires_at": "past"}, "expires_at", "The expiry must be in the future."),
        ({"labels": {"bad key!": "x"}}, "labels", "is not valid"),
    ],
)
def test_join_token_creation_is_validated(ctx, kwargs, field, message):
    if kwargs.get("expires_at") == "past":
        kwargs["expires_at"] = timezone.now() - timedelta(seconds=1)
    with pytest.raises(ServiceError) as error:
        make_token(ctx, **kwargs)
    assert error.value.field == field
    assert message in error.value.message
    assert not JoinToken.objects.exists()


# --- Joining ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown", "Unknown join token. Create one under Nodes → Join tokens."),
        ("no token", "Unknown join token."),
        ("expired", "This join token is expired. Create a new one"),
        ("used up", "This join token is used up. Create a new one"),
        ("revoked", "This join token is revoked. Create a new one"),
    ],
)
def test_join_fails_closed(ctx, case, message):
    token, key = make_token(ctx, max_uses=1)
    if case == "unknown":
        key = "slmj_" + "A" * 43
    elif case == "no token":
        key = ""
    elif case == "expired":
        JoinToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    elif case == "used up":
        join(key, "first")
    elif case == "revoked":
        services.revoke_join_token(ctx, token)
    uses_before = JoinToken.objects.get(pk=token.pk).uses

    with pytest.raises(services.JoinRefused) as refused:
        join(key, "newcomer")

    assert message in refused.value.message
    assert refused.value.status_code == 403
    assert not Node.objects.filter(name="newcomer").exists()
    assert JoinToken.objects.get(pk=token.pk).uses == uses_before


def test_join_counts_uses_up_to_max_and_applies_token_labels(ctx):
    labels = {"zone": "eu-1", "tier": "small"}
    token, key = make_token(ctx, max_uses=3, labels=labels)

    joined = [join(key, f"worker-{i}") for i in range(3)]

    token.refresh_from_db()
    assert token.uses == 3
    assert token.get_status() == "used up"
    for node, credential in joined:
        node.refresh_from_db()
        assert node.labels == labels
        assert node.join_token_id == token.pk
        assert node.state == NodeState.PENDING
        assert node.last_heartbeat_at is None
        assert node.queue == f"node.{node.pk}"
        # stored hashed: the credential itself is nowhere in the row
        assert credential.startswith("slmn_")
        assert node.credential_hash == hash_secret(credential)
        assert node.credential_prefix == credential[:11]
        row = json.dumps(list(Node.objects.filter(pk=node.pk).values()), default=str)
        assert credential not in row
        event = last_event(node, "joined")
        assert event.actor_type == ActorType.NODE
        assert event.reason == "join token rack 7"
        assert event.changes["labels"] == {"before": None, "after": labels}
    assert len({credential for _, credential in joined}) == 3

    with pytest.raises(services.JoinRefused, match="used up"):
        join(key, "worker-3")
    assert Node.objects.count() == 3


@pytest.mark.parametrize("live_state", ["pending", "ready"])
def test_name_held_by_a_live_node_is_refused(ctx, live_state):
    token, key = make_token(ctx, max_uses=5)
    node, credential = join(key, "web-1")
    if live_state == "ready":
        assert beat(credential).status == 200

    with pytest.raises(ConflictError) as conflict:
        join(key, "web-1")

    assert conflict.value.status_code == 409
    assert conflict.value.field == "name"
    assert "A live node is already called 'web-1'" in conflict.value.message
    node.refresh_from_db()
    assert node.credential_hash == hash_secret(credential)  # the live node keeps its identity
    assert Node.objects.count() == 1
    assert JoinToken.objects.get(pk=token.pk).uses == 1


def test_unreachable_node_name_is_taken_over_keeping_the_node_id(ctx, settings):
    settings.FLEET_NODE_GRACE_SECONDS = 20
    with freeze_time("2031-05-01T08:00:00Z") as frozen:
        _, key = make_token(ctx, labels={"zone": "a"})
        node, old = join(key, "edge-1")
        assert beat(old).status == 200
        frozen.tick(timedelta(seconds=21))
        assert services.sweep_liveness() == [node.pk]

        _, key2 = make_token(ctx, name="replacement", labels={"rack": "7"})
        again, new = join(key2, "edge-1")

        assert again.pk == node.pk
        assert Node.objects.count() == 1
        assert new != old
        again.refresh_from_db()
        assert again.state == NodeState.PENDING
        assert again.labels == {"zone": "a", "rack": "7"}
        assert beat(old).status == 401
        assert beat(new).status == 200
        again.refresh_from_db()
        assert again.state == NodeState.READY
    assert verbs(node) == [
        "joined",
        "became_ready",
        "became_unreachable",
        "rejoined",
        "became_ready",
    ]


# --- Credentials -----------------------------------------------------------------------------
def test_rotated_credential_is_handed_over_and_old_one_works_until_new_one_is_used(ctx, ready_node):
    node, old = ready_node
    assert "new_credential" not in beat(old).body

    services.rotate_credential(ctx, node)

    node.refresh_from_db()
    assert node.pending_credential_hash
    assert node.credential_hash == hash_secret(old)
    answer = beat(old)
    assert answer.status == 200, answer.body
    new = answer.body["new_credential"]
    assert new.startswith("slmn_") and new != old
    assert hash_secret(new) == node.pending_credential_hash
    assert new not in json.dumps(list(Node.objects.filter(pk=node.pk).values()), default=str)
    # the agent may miss that answer: the old credential keeps working and repeats the offer
    again = beat(old)
    assert again.status == 200 and again.body["new_credential"] == new

    switched = beat(new)
    assert switched.status == 200, switched.body
    assert "new_credential" not in switched.body
    node.refresh_from_db()
    assert node.credential_hash == hash_secret(new)
    assert node.pending_credential_hash == "" and node.pending_credential_ciphertext == ""

    refused = beat(old)
    assert refused.status == 401
    assert refused.body["code"] == "node_credential_invalid"
    assert node.state == NodeState.READY
    event = last_event(node, "credential_rotated")
    assert event.changes == {"credential": {"before": "(redacted)", "after": "(redacted)"}}
    everything = json.dumps(list(HistoryEvent.objects.values("changes", "reason")))
    assert old not in everything and new not in everything


def test_credential_prefix_follows_a_rotated_credential_picked_up_by_heartbeat(ctx, ready_node):
    """The console shows ``credential_prefix``; after the switch it must be the new one's."""
    node, old = ready_node
    services.rotate_credential(ctx, node)
    new = beat(old).body["new_credential"]
    assert beat(new).status == 200

    node.refresh_from_db()
    assert node.credential_hash == hash_secret(new)
    assert node.credential_prefix == new[:11], (
        f"credential_prefix {node.credential_prefix!r} still names the old credential "
        f"({old[:11]!r}); the new one is {new[:11]!r}"
    )


def test_second_rotation_before_pick_up_replaces_the_pending_credential(ctx, ready_node):
    node, old = ready_node
    services.rotate_credential(ctx, node)
    first = beat(old).body["new_credential"]
    services.rotate_credential(ctx, node)
    second = beat(old).body["new_credential"]

    assert first != second
    assert beat(first).status == 401
    assert beat(second).status == 200
    assert beat(old).status == 401


def test_deleted_node_credential_stops_working_at_once(ctx, ready_node):
    node, credential = ready_node
    node_id = node.pk

    services.delete_node(ctx, node)

    result = beat(credential)
    assert result.status == 401
    assert result.body["code"] == "node_credential_invalid"
    assert "the node was deleted" in result.body["detail"]
    assert services.authenticate_node(credential) is None
    assert not Node.objects.filter(pk=node_id).exists()
    deleted = HistoryEvent.objects.get(
        target_type="fleet.node", target_id=str(node_id), verb="deleted"
    )
    assert deleted.actor_name == "oscar"


# --- Heartbeat validation --------------------------------------------------------------------
def _payload_raw(**overrides: Any) -> bytes:
    return json.dumps(heartbeat_payload(**overrides)).encode()


GPU = {"name": "NVIDIA L4", "uuid": "GPU-1", "memory_total_bytes": 24 * 2**30}

INVALID_HEARTBEATS = [
    pytest.param(b"{not json", "parse_error", None, id="malformed-json"),
    pytest.param(b"\xff\xfe\x00", "parse_error", None, id="not-utf8"),
    pytest.param(b"[1, 2, 3]", "invalid", "body", id="not-an-object"),
    pytest.param(_payload_raw(cpu={"cores": "8"}), "invalid", "cpu.cores", id="cores-string"),
    pytest.param(_payload_raw(cpu={"cores": True}), "invalid", "cpu.cores", id="cores-bool"),
    pytest.param(_payload_raw(cpu={"cores": 0}), "invalid", "cpu.cores", id="cores-zero"),
    pytest.param(
        _payload_raw(memory={"total_bytes": -1}), "invalid", "memory.total_bytes", id="neg-ram"
    ),
    pytest.param(
        _payload_raw(disk={"free_bytes": -5}), "invalid", "disk.free_bytes", id="neg-disk"
    ),
    pytest.param(
        _payload_raw(memory={"available_bytes": 1.5}),
        "invalid",
        "memory.available_bytes",
        id="fractional-bytes",
    ),
    pytest.param(
        _payload_raw(memory={"total_bytes": 2**64}),
        "invalid",
        "memory.total_bytes",
        id="bytes-out-of-range",
    ),
    pytest.param(_payload_raw(cpu={"load_1m": float("nan")}), "invalid", "cpu.load_1m", id="nan"),
    pytest.param(
        _payload_raw(cpu={"usage_percent": 101}), "invalid", "cpu.usage_percent", id="cpu-101pct"
    ),
    pytest.param(_payload_raw(gpus=[GPU] * (MAX_GPUS + 1)), "invalid", "gpus", id="too-many-gpus"),
    pytest.param(_payload_raw(gpus={"0": GPU}), "invalid", "gpus", id="gpus-not-a-list"),
    pytest.param(
        _payload_raw(gpus=[{**GPU, "temperature_c": 500}]),
        "invalid",
        "gpus[0].temperature_c",
        id="gpu-temperature",
    ),
    pytest.param(
        _payload_raw(docker={"reachable": "yes"}), "invalid", "docker.reachable", id="docker-str"
    ),
    pytest.param(_payload_raw(sent_at="yesterday"), "invalid", "body.sent_at", id="sent-at"),
    pytest.param(
        _payload_raw(agent_version=None), "invalid", "body.agent_version", id="no-version"
    ),
    pytest.param(
        _payload_raw(host={"hostname": "h" * 513}), "invalid", "host.hostname", id="long-string"
    ),
    pytest.param(_payload_raw(host="box"), "invalid", "host", id="host-not-object"),
    pytest.param(_payload_raw(containers="many"), "invalid", "containers", id="containers-str"),
    pytest.param(
        _payload_raw(containers=[{"id": "abc", "labels": ["x"]}]),
        "invalid",
        "containers[0].labels",
        id="container-labels",
    ),
]


def _observed(node: Node) -> dict[str, Any]:
    node.refresh_from_db()
    return {
        "state": node.state,
        "last_heartbeat_at": node.last_heartbeat_at,
        "inventory": node.inventory,
        "conditions": node.conditions,
        "agent_version": node.agent_version,
        "clock_skew_seconds": node.clock_skew_seconds,
        "events": verbs(node),
    }


@pytest.mark.parametrize(("body", "code", "error_key"), INVALID_HEARTBEATS)
def test_malformed_heartbeat_is_400_and_changes_nothing(ready_node, body, code, error_key):
    node, credential = ready_node
    before = _observed(node)

    result = beat(credential, raw=body)

    assert result.status == 400, result.body
    assert result.body["code"] == code
    if error_key is not None:
        assert error_key in result.body["errors"], result.body
        assert result.body["detail"].startswith("The heartbeat is not valid:")
    assert _observed(node) == before


def test_malformed_heartbeat_leaves_a_pending_node_pending(ctx):
    _, key = make_token(ctx)
    node, credential = join(key, "fresh-1")
    result = beat(credential, raw=_payload_raw(cpu={"cores": "many"}))
    assert result.status == 400
    node.refresh_from_db()
    assert node.state == NodeState.PENDING and node.last_heartbeat_at is None


def test_oversized_heartbeat_is_413_and_changes_nothing(ready_node, settings):
    node, credential = ready_node
    before = _observed(node)
    body = _payload_raw() + b" " * settings.FLEET_HEARTBEAT_MAX_BYTES  # valid JSON, too big

    result = beat(credential, raw=body)

    assert result.status == 413
    assert result.body["code"] == "too_large"
    assert _observed(node) == before


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        (None, "not_authenticated"),
        ("", "not_authenticated"),
        ("an-api-token-not-a-node-one", "not_authenticated"),
        ("slmn_" + "B" * 43, "node_credential_invalid"),
    ],
)
def test_heartbeat_without_a_valid_node_credential_is_401(ready_node, credential, code):
    node, _ = ready_node
    before = _observed(node)
    result = beat(credential)
    assert result.status == 401
    assert result.body["code"] == code
    assert _observed(node) == before


def test_heartbeat_without_gpus_is_valid_and_gpus_are_stored(ctx):
    _, key = make_token(ctx, max_uses=2)
    no_gpu, credential = join(key, "cpu-only")
    payload = heartbeat_payload()
    del payload["gpus"], payload["gpu_driver"]
    assert beat(credential, payload).status == 200
    no_gpu.refresh_from_db()
    assert no_gpu.state == NodeState.READY
    assert no_gpu.inventory.get("gpus", []) == []

    gpu_node, gpu_credential = join(key, "gpu-box")
    gpu = {**GPU, "memory_free_bytes": 20 * 2**30, "utilization_percent": 3.0}
    assert beat(gpu_credential, heartbeat_payload(gpus=[gpu])).status == 200
    gpu_node.refresh_from_db()
    assert gpu_node.inventory["gpus"] == [gpu]
    assert gpu_node.agent_version == "0.1.0"
    assert gpu_node.inventory["host"]["hostname"] == "host-a"


# --- Conditions, states, history -------------------------------------------------------------
def test_conditions_are_raised_and_cleared_with_history_events(ready_node):
    node, credential = ready_node
    assert verbs(node) == ["joined", "became_ready"]
    ready = last_event(node, "became_ready")
    assert ready.changes == {"state": {"before": "pending", "after": "ready"}}
    assert ready.actor_type == ActorType.NODE and ready.actor_name == node.name

    docker_down = {"reachable": False, "version": None, "error": "cannot connect"}
    assert beat(credential, heartbeat_payload(docker=docker_down)).status == 200
    node.refresh_from_db()
    assert node.conditions == [NodeCondition.DOCKER_UNREACHABLE]
    assert node.state == NodeState.READY  # the agent still reports: ready, with a condition
    assert last_event(node, "condition_raised").changes == {
        "docker_unreachable": {"before": False, "after": True}
    }

    # steady state: the same condition again writes nothing
    assert beat(credential, heartbeat_payload(docker=docker_down)).status == 200
    assert verbs(node) == ["joined", "became_ready", "condition_raised"]

    nearly_full = {"total_bytes": 100 * 2**30, "free_bytes": 5 * 2**30}
    assert beat(credential, heartbeat_payload(disk=nearly_full)).status == 200
    node.refresh_from_db()
    assert node.conditions == [NodeCondition.DISK_NEARLY_FULL]
    assert verbs(node)[-2:] == ["condition_raised", "condition_cleared"]
    assert last_event(node, "condition_cleared").changes == {
        "docker_unreachable": {"before": True, "after": False}
    }
    assert last_event(node, "condition_raised").changes == {
        "disk_nearly_full": {"before": False, "after": True}
    }

    now = timezone.now()
    ahead = (now + timedelta(seconds=120)).isoformat()
    assert beat(credential, heartbeat_payload(sent_at=ahead), received_at=now).status == 200
    node.refresh_from_db()
    assert node.conditions == [NodeCondition.CLOCK_SKEW]
    assert node.clock_skew_seconds == pytest.approx(120, abs=0.01)
    # liveness is judged by the server's receive time, never the agent's clock
    assert node.last_heartbeat_at == now

    assert beat(credential).status == 200
    node.refresh_from_db()
    assert node.conditions == []
    assert verbs(node) == [
        "joined",
        "became_ready",
        "condition_raised",  # docker_unreachable
        "condition_raised",  # disk_nearly_full
        "condition_cleared",  # docker_unreachable
        "condition_raised",  # clock_skew
        "condition_cleared",  # disk_nearly_full
        "condition_cleared",  # clock_skew
    ]


def test_sweep_marks_unreachable_exactly_after_the_grace_period(ctx, settings):
    settings.FLEET_NODE_GRACE_SECONDS = 20
    with freeze_time("2031-01-01T00:00:00Z") as frozen:
        _, key = make_token(ctx, max_uses=2)
        node, credential = join(key, "sweep-1")
        idle, _ = join(key, "never-beats")  # pending nodes are not judged
        received = timezone.now()
        assert beat(credential, received_at=received).status == 200

        frozen.tick(timedelta(seconds=20))
        assert services.sweep_liveness() == []
        node.refresh_from_db()
        assert node.state == NodeState.READY
        assert node.get_status() == NodeState.READY

        frozen.tick(timedelta(milliseconds=1))
        node.refresh_from_db()
        assert node.get_status() == NodeState.UNREACHABLE  # judged again even before the sweep
        assert services.sweep_liveness() == [node.pk]
        node.refresh_from_db()
        assert node.state == NodeState.UNREACHABLE
        assert node.state_changed_at == timezone.now()
        assert node.last_heartbeat_at == received
        event = last_event(node, "became_unreachable")
        assert (event.actor_type, event.actor_name) == (ActorType.SYSTEM, "liveness")
        assert event.changes == {"state": {"before": "ready", "after": "unreachable"}}

        assert services.sweep_liveness() == []  # idempotent: one event per transition
        idle.refresh_from_db()
        assert idle.state == NodeState.PENDING

        frozen.tick(timedelta(seconds=30))
        assert beat(credential).status == 200
        node.refresh_from_db()
        assert node.state == NodeState.READY
    assert Node.objects.filter(name="sweep-1").count() == 1
    assert verbs(node) == ["joined", "became_ready", "became_unreachable", "became_ready"]


def test_agent_clock_cannot_keep_a_silent_node_alive(ctx, settings):
    settings.FLEET_NODE_GRACE_SECONDS = 20
    with freeze_time("2031-01-01T00:00:00Z") as frozen:
        _, key = make_token(ctx)
        node, credential = join(key, "liar")
        future = (timezone.now() + timedelta(hours=1)).isoformat()
        assert beat(credential, heartbeat_payload(sent_at=future)).status == 200
        frozen.tick(timedelta(seconds=21))
        assert services.sweep_liveness() == [node.pk]


# --- Batched ingestion -----------------------------------------------------------------------
def test_ingest_batch_uses_a_constant_number_of_queries_for_1_10_100_heartbeats(ctx):
    _, key = make_token(ctx, max_uses=100)
    credentials = [join(key, f"batch-{i:03d}")[1] for i in range(100)]
    # steady state: every node is ready already with no conditions
    warm = ingest_batch([make_row(c, heartbeat_payload(), timezone.now()) for c in credentials])
    assert {r.status for r in warm} == {200}
    assert Node.objects.filter(state=NodeState.READY).count() == 100

    counts: dict[int, int] = {}
    for size in (1, 10, 100):
        received = timezone.now()
        rows = [make_row(c, heartbeat_payload(), received) for c in credentials[:size]]
        with CaptureQueriesContext(connection) as captured:
            results = ingest_batch(rows)
        assert [r.status for r in results] == [200] * size
        assert Node.objects.filter(last_heartbeat_at=received).count() == size
        counts[size] = len(captured)
        statements = [q["sql"] for q in captured if "SAVEPOINT" not in q["sql"]]
        assert len(statements) == 2, statements  # one SELECT, one executemany UPDATE
        assert statements[0].startswith("SELECT") and "UPDATE fleet_node" in statements[1]

    figure = f"queries per ingest_batch of 1/10/100 heartbeats: {counts}"
    print(figure)
    assert counts[1] == counts[10] == counts[100], figure
    # one SELECT + one executemany UPDATE + the savepoint pair of the test's transaction
    assert counts[100] == 4, figure


def test_ingest_batch_answers_in_order_and_refuses_unknown_credentials(ctx):
    _, key = make_token(ctx, max_uses=2)
    a, cred_a = join(key, "order-a")
    b, cred_b = join(key, "order-b")
    now = timezone.now()
    rows = [
        make_row(cred_b, heartbeat_payload(), now),
        make_row("slmn_" + "C" * 43, heartbeat_payload(), now),
        make_row(cred_a, heartbeat_payload(), now),
    ]
    results = ingest_batch(rows)
    assert [r.status for r in results] == [200, 401, 200]
    assert results[0].body["node_id"] == b.pk and results[0].body["name"] == "order-b"
    assert results[2].body["node_id"] == a.pk
    assert results[0].body["interval_seconds"] >= 1
    assert {n.state for n in Node.objects.all()} == {NodeState.READY}


# --- Operator flags --------------------------------------------------------------------------
def test_operator_flags_draining_and_maintenance_imply_cordoned(ctx, ready_node):
    node, _ = ready_node
    assert node.schedulable

    node = services.update_node(ctx, node, draining=True)
    assert node.cordoned and node.draining and not node.schedulable
    assert node.flags == ["cordoned", "draining"]
    assert last_event(node, "updated").changes == {
        "cordoned": {"before": False, "after": True},
        "draining": {"before": False, "after": True},
    }
    with pytest.raises(ConflictError, match="stays cordoned"):
        services.update_node(ctx, node, cordoned=False)

    node = services.update_node(ctx, node, draining=False, maintenance=True)
    assert node.flags == ["cordoned", "maintenance"]
    node = services.update_node(ctx, node, maintenance=False, cordoned=False)
    assert node.flags == [] and node.schedulable
    assert node.state == NodeState.READY  # flags never change the liveness state

    with pytest.raises(ServiceError, match="Cannot change"):
        services.update_node(ctx, node, state=NodeState.UNREACHABLE)


# --- Commands --------------------------------------------------------------------------------
def test_send_command_puts_it_on_the_node_queue_with_its_expiry(
    ctx, ready_node, sent_tasks, settings, django_capture_on_commit_callbacks
):
    settings.FLEET_COMMAND_TTL_SECONDS = 30
    node, _ = ready_node
    with django_capture_on_commit_callbacks(execute=True):
        command = services.send_command(ctx, node, CommandKind.PROBE)

    command.refresh_from_db()
    assert command.state == CommandState.SENT
    ttl = (command.expires_at - command.created_at).total_seconds()
    assert ttl == pytest.approx(30, abs=1)
    assert command.sent_count == 1 and command.last_sent_at is not None
    assert sent_tasks.drain() == [
        {
            "name": "fleet.agent.probe",
            "args": [command.pk, {}],
            "queue": f"node.{node.pk}",
            "expires": command.expires_at,
        }
    ]


def test_an_expired_command_is_never_sent_again(ctx, ready_node, sent_tasks):
    node, _ = ready_node
    command = NodeCommand.objects.create(
        node=node, kind=CommandKind.PROBE, expires_at=timezone.now() - timedelta(seconds=1)
    )
    services.dispatch_command(command.pk)
    assert sent_tasks.drain() == []
    assert command.get_state() == CommandState.EXPIRED


def _command(node: Node, *, ttl: float = 60) -> NodeCommand:
    return NodeCommand.objects.create(
        node=node, kind=CommandKind.PROBE, expires_at=timezone.now() + timedelta(seconds=ttl)
    )


def test_command_answers(ctx):
    _, key = make_token(ctx, max_uses=2)
    a, _ = join(key, "cmd-a")
    b, _ = join(key, "cmd-b")

    ok = services.complete_command(a, _command(a).pk, result={"docker": {}}, error=None)
    assert ok.state == CommandState.SUCCEEDED and ok.result == {"docker": {}}
    assert ok.round_trip_ms is not None

    failed = services.complete_command(a, _command(a).pk, result=None, error="engine down")
    assert failed.state == CommandState.FAILED and failed.error == "engine down"

    duplicate = services.complete_command(a, ok.pk, result=None, error="late error")
    assert duplicate.state == CommandState.SUCCEEDED and duplicate.error == ""

    late = _command(a, ttl=-1)
    late = services.complete_command(a, late.pk, result={"x": 1}, error=None)
    assert late.state == CommandState.EXPIRED and late.result == {}

    theirs = _command(b)
    with pytest.raises(ServiceError, match=r"No such command for this node\."):
        services.complete_command(a, theirs.pk, result={"forged": True}, error=None)
    theirs.refresh_from_db()
    assert theirs.state == CommandState.SENT and theirs.result == {}


@pytest.mark.django_db
def test_a_mass_outage_is_swept_with_a_constant_number_of_queries(settings):
    """A rack going dark together: one locked SELECT, one UPDATE, one INSERT of events."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.models import HistoryEvent
    from fleet import services as fleet_services
    from fleet.models import Node, hash_secret

    settings.FLEET_NODE_GRACE_SECONDS = 20
    old = timezone.now() - timedelta(seconds=60)
    Node.objects.bulk_create(
        Node(
            name=f"rack-{i:03d}",
            state="ready",
            credential_prefix="slmn_x",
            credential_hash=hash_secret(f"c{i}"),
            last_heartbeat_at=old,
        )
        for i in range(150)
    )
    with CaptureQueriesContext(connection) as queries:
        gone = fleet_services.sweep_liveness()
    assert len(gone) == 150
    assert len(queries) <= 6, [q["sql"][:80] for q in queries]
    assert Node.objects.filter(state="unreachable").count() == 150
    assert HistoryEvent.objects.filter(verb="became_unreachable").count() == 150
