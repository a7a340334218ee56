"""Real agents (``python manage.py fleet_agent``) against a live control plane.

Each test starts agent processes (a Celery worker on its own queue plus the heartbeat loop)
against pytest-django's live server, with Redis as the broker and the local Docker engine,
and stops every one of them in its finalizer. Heartbeats every second; grace periods and
command expiries are shortened through the ``settings`` fixture.

Node ids start at a random offset in every test, so ``node.<id>`` queues never meet those
of earlier runs or of other people's runs on the same Redis.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from docker.errors import NotFound
from rest_framework.test import APIClient

from core.history import ChangeContext
from core.models import HistoryEvent
from fleet import services
from fleet.agent.docker_driver import LABEL_MANAGED, LABEL_NODE
from fleet.agent.version import AGENT_VERSION
from fleet.choices import CommandKind, CommandState, NodeCondition, NodeState
from fleet.models import JoinToken, Node, NodeCommand, hash_secret
from tests.fleet.agents import (
    KOMBU_DJANGO_UTILS,
    Agent,
    AgentRunner,
    UnixSocketProxy,
    heartbeat_payload,
    imported_modules,
    purge_node_queues,
    queue_length,
    wait_until,
)
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_S = 30
HEARTBEAT_URL = "/api/v1/agent/heartbeat/"
ID_SPAN = 1000


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def node_ids(transactional_db) -> range:
    """Node ids of this test start at a random offset; stale messages of those queues go."""
    base = random.randrange(10**6, 10**9)  # noqa: S311 - spreading ids, not a secret
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('fleet_node', 'id'), %s, false)", [base]
        )
    ids = range(base, base + ID_SPAN)
    purge_node_queues(django_settings.REDIS_URL, list(ids))
    return ids


@pytest.fixture
def runner(transactional_db, live_server, node_ids, tmp_path) -> Iterator[AgentRunner]:
    cache.clear()  # the join endpoint's throttle counts in the default cache
    agents = AgentRunner(tmp_path / "agents", live_server.url)
    yield agents
    agents.stop_all()
    purge_node_queues(django_settings.REDIS_URL, list(node_ids))


@pytest.fixture
def names() -> Callable[[str], str]:
    """Node names unique to this test (celery host names and pidboxes are shared on Redis)."""
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


@pytest.fixture
def ctx(operator_user) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


@pytest.fixture
def operator(operator_user) -> APIClient:
    client = APIClient()
    client.force_login(operator_user)
    return client


def make_token(ctx: ChangeContext, **kwargs: Any) -> tuple[JoinToken, str]:
    kwargs.setdefault("name", "e2e")
    return services.create_join_token(ctx, **kwargs)


# --- helpers ---------------------------------------------------------------------------------
def wait_ready(agent: Agent, runner: AgentRunner, timeout: float = READY_TIMEOUT_S) -> Node:
    def ready() -> Node | None:
        if not agent.running():
            raise AssertionError(
                f"agent {agent.name} exited ({agent.proc.returncode})\n{agent.tail()}"
            )
        node = Node.objects.filter(name=agent.name).first()
        if node is not None and node.state == NodeState.READY:
            return node
        return None

    return wait_until(ready, timeout, message=runner.tails)


def fresh(node: Node) -> Node:
    return Node.objects.get(pk=node.pk)


def next_heartbeat(node: Node, runner: AgentRunner, timeout: float = 10) -> Node:
    """Wait for a heartbeat received after now; returns the node as it then is."""
    since = timezone.now()

    def arrived() -> Node | None:
        current = fresh(node)
        return current if current.last_heartbeat_at and current.last_heartbeat_at > since else None

    return wait_until(arrived, timeout, message=runner.tails)


def verbs(node: Node) -> list[str]:
    return list(
        HistoryEvent.objects.filter(target_type="fleet.node", target_id=str(node.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )


def wait_command(command_id: int, runner: AgentRunner, timeout: float = 20) -> NodeCommand:
    def done() -> NodeCommand | None:
        command = NodeCommand.objects.get(pk=command_id)
        return command if command.state != CommandState.SENT else None

    return wait_until(done, timeout, message=runner.tails)


def probe(operator: APIClient, node: Node) -> int:
    response = operator.post(f"/api/v1/nodes/{node.pk}/probe/")
    assert response.status_code == 202, response.content
    return int(response.json()["id"])


def post_heartbeat(server: str, credential: str) -> requests.Response:
    return requests.post(
        server + HEARTBEAT_URL,
        json=heartbeat_payload(),
        headers={"Authorization": f"Bearer {credential}"},
        timeout=10,
    )


def database_connections(agent: Agent) -> list[str]:
    port = int(django_settings.DATABASES["default"].get("PORT") or 5432)
    found = []
    for pid in agent.pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.raddr and conn.raddr.port == port:
                    found.append(f"pid {pid} -> {conn.raddr}")
    return found


# --- joining ---------------------------------------------------------------------------------
def test_two_agents_join_through_one_token_and_a_third_is_refused(
    runner, ctx, names, live_server, tmp_path
):
    labels = {"site": "e2e", "rack": "r1"}
    token, key = make_token(ctx, max_uses=2, labels=labels)
    first = runner.start(names("n1"), join_token=key)
    second = runner.start(names("n2"), join_token=key)

    nodes = [wait_ready(first, runner), wait_ready(second, runner)]

    hostname = socket.gethostname()
    for agent, node in zip((first, second), nodes, strict=True):
        path = agent.data_dir / "agent.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text(encoding="utf-8")
        assert key not in text  # the join token is not kept
        state = agent.state()
        assert state is not None
        assert state["node_id"] == node.pk and state["name"] == agent.name
        assert state["credential"].startswith("slmn_")
        assert hash_secret(state["credential"]) == node.credential_hash
        assert state["queue"] == f"node.{node.pk}" == node.queue
        assert node.labels == labels
        assert node.join_token_id == token.pk
        assert node.agent_version == AGENT_VERSION
        inventory = node.inventory
        assert inventory["host"]["hostname"] == hostname
        assert inventory["docker"]["reachable"] is True, inventory["docker"]
        assert inventory["docker"]["version"]
        assert inventory["agent_version"] == AGENT_VERSION
        assert inventory["disk"]["path"] == str(agent.data_dir.resolve())
        assert inventory["memory"]["total_bytes"] > 0 and inventory["cpu"]["cores"] >= 1
        assert isinstance(inventory["gpus"], list)  # none is a valid answer
        assert node.conditions == [] or node.conditions == [NodeCondition.DISK_NEARLY_FULL]
        assert database_connections(agent) == []  # the agent never talks to PostgreSQL
        assert verbs(node) == ["joined", "became_ready"]
    assert nodes[0].queue != nodes[1].queue
    token.refresh_from_db()
    assert token.uses == 2 and token.get_status() == "used up"

    # each worker consumes its own queue and nothing else
    from config.celery import app

    destinations = [f"agent-{agent.name}@{hostname}" for agent in (first, second)]
    queues = app.control.inspect(destination=destinations, timeout=3).active_queues() or {}
    assert {host: [q["name"] for q in qs] for host, qs in queues.items()} == {
        destinations[0]: [nodes[0].queue],
        destinations[1]: [nodes[1].queue],
    }
    stats = app.control.inspect(destination=destinations[:1], timeout=3).stats() or {}
    assert stats[destinations[0]]["prefetch_count"] == 1, stats
    assert stats[destinations[0]]["pool"]["max-concurrency"] == 1

    # a third join with the used-up token fails closed, with the reason
    third = runner.start(names("n3"), join_token=key)
    assert third.wait_exit(20) != 0
    assert "used up" in third.output(), third.tail()
    assert "refused to let this node join" in third.output()
    assert third.state() is None

    # a name held by a live node is refused too, even with a good token
    _, other_key = make_token(ctx, name="other")
    clash = runner.start(first.name, join_token=other_key, data_dir=tmp_path / "clash")
    assert clash.wait_exit(20) != 0
    assert f"A live node is already called '{first.name}'" in clash.output(), clash.tail()

    # an unknown token, and a server URL that is not SLM Fleet's, are refused as well
    stranger = runner.start(names("n4"), join_token="slmj_" + "x" * 43)
    assert stranger.wait_exit(20) != 0
    assert "Unknown join token" in stranger.output(), stranger.tail()
    lost = runner.start(names("n5"), join_token=other_key, server=live_server.url + "/nope")
    assert lost.wait_exit(20) != 0
    assert "is --server the SLM Fleet URL?" in lost.output(), lost.tail()

    assert Node.objects.count() == 2
    assert all(agent.running() for agent in (first, second))


# --- commands --------------------------------------------------------------------------------
def test_probe_round_trip_reaches_only_the_addressed_node(runner, ctx, names, operator):
    _, key = make_token(ctx, max_uses=2)
    # n1 lists every module it imports (main process and pool child) on its log
    agents = [
        runner.start(names("n1"), join_token=key, env={"PYTHONPROFILEIMPORTTIME": "1"}),
        runner.start(names("n2"), join_token=key),
    ]
    node1, node2 = (wait_ready(agent, runner) for agent in agents)

    first = probe(operator, node1)
    second = probe(operator, node2)
    done = {pk: wait_command(pk, runner) for pk in (first, second)}

    for pk, node in ((first, node1), (second, node2)):
        command = done[pk]
        assert command.node_id == node.pk
        assert command.state == CommandState.SUCCEEDED, (command.error, runner.tails())
        assert command.result["docker"]["reachable"] is True
        assert command.result["docker"]["version"]
        assert command.result["agent_version"] == AGENT_VERSION
        assert command.result["agent_time"].endswith("Z")
        assert command.completed_at is not None and command.round_trip_ms is not None

    # a probe to n1 is answered by n1 only
    only = probe(operator, node1)
    assert wait_command(only, runner).state == CommandState.SUCCEEDED
    logs = [agent.output() for agent in agents]
    assert f"probe {first} answered" in logs[0] and f"probe {only} answered" in logs[0]
    assert f"probe {second} answered" in logs[1]
    assert f"probe {first} answered" not in logs[1] and f"probe {only} answered" not in logs[1]
    assert f"probe {second} answered" not in logs[0]
    assert list(NodeCommand.objects.filter(node=node2).values_list("pk", "state")) == [
        (second, CommandState.SUCCEEDED)
    ]

    # having joined, heartbeated and run probes, the agent has loaded no Django of its own
    modules = imported_modules(logs[0])
    assert "fleet.agent.worker" in modules and "celery" in modules
    django = {m for m in modules if m == "django" or m.startswith("django.")}
    assert django <= KOMBU_DJANGO_UTILS, sorted(django - KOMBU_DJANGO_UTILS)
    assert not {m for m in modules if m.startswith(("fleet.models", "core.", "config."))}


def test_a_command_that_expired_before_the_agent_got_it_is_not_executed(
    runner, ctx, names, operator, settings
):
    _, key = make_token(ctx)
    agent = runner.start(names("n1"), join_token=key)
    node = wait_ready(agent, runner)
    assert agent.stop() is not None
    assert not agent.running()

    settings.FLEET_COMMAND_TTL_SECONDS = 3
    stale = services.send_command(ctx, node, CommandKind.PROBE)
    broker = django_settings.REDIS_URL
    assert queue_length(broker, node.queue) == 1  # sent, waiting for the agent
    wait_until(lambda: timezone.now() > stale.expires_at + timedelta(seconds=0.5), 10)

    again = runner.start(agent.name, data_dir=agent.data_dir)  # no join token: it has its state
    next_heartbeat(node, runner, timeout=READY_TIMEOUT_S)
    wait_until(lambda: queue_length(broker, node.queue) == 0, 10, message=runner.tails)
    time.sleep(1.5)  # had it run, the answer would be in by now

    stale.refresh_from_db()
    assert stale.state == CommandState.SENT, (stale.state, stale.result, again.tail())
    assert stale.get_state() == CommandState.EXPIRED
    assert stale.result == {} and stale.completed_at is None
    assert f"probe {stale.pk} answered" not in again.output()
    assert "Discarding revoked task: fleet.agent.probe" in again.output()  # got it, dropped it

    settings.FLEET_COMMAND_TTL_SECONDS = 30
    fresh_probe = probe(operator, node)  # the agent does consume its queue
    assert wait_command(fresh_probe, runner).state == CommandState.SUCCEEDED


# --- inventory -------------------------------------------------------------------------------
def test_managed_containers_show_up_in_their_nodes_inventory_only(
    runner, ctx, names, docker_client, busybox_image
):
    _, key = make_token(ctx, max_uses=2)
    agents = [runner.start(names("n1"), join_token=key), runner.start(names("n2"), join_token=key)]
    node1, node2 = (wait_ready(agent, runner) for agent in agents)

    created = []
    try:
        managed = docker_client.containers.run(
            busybox_image,
            ["/bin/busybox", "sleep", "120"],
            name=f"fleet-e2e-{uuid.uuid4().hex[:8]}",
            labels={
                LABEL_MANAGED: "true",
                LABEL_NODE: str(node1.pk),
                "fleet.slot": "0",
                "fleet.test-exempt": "inventory test, a busybox stand-in",
            },
            network_mode="host",
            init=True,
            detach=True,
        )
        created.append(managed.id)
        unmanaged = docker_client.containers.run(
            busybox_image,
            ["/bin/busybox", "sleep", "120"],
            name=f"fleet-e2e-{uuid.uuid4().hex[:8]}",
            labels={LABEL_NODE: str(node1.pk)},  # not fleet.managed: not ours
            network_mode="host",
            init=True,
            detach=True,
        )
        created.append(unmanaged.id)

        def listed() -> dict[str, Any] | None:
            containers = fresh(node1).inventory.get("containers", [])
            return next((c for c in containers if c["id"] == managed.id[:12]), None)

        entry = wait_until(listed, 15, message=runner.tails)
        assert entry["name"] == managed.name
        assert entry["image"] == busybox_image
        assert entry["state"] == "running"
        assert entry["labels"] == {
            LABEL_MANAGED: "true",
            LABEL_NODE: str(node1.pk),
            "fleet.slot": "0",
            "fleet.test-exempt": "inventory test, a busybox stand-in",
        }
        ids1 = [c["id"] for c in fresh(node1).inventory["containers"]]
        assert unmanaged.id[:12] not in ids1
        later = next_heartbeat(node2, runner)
        assert later.inventory["containers"] == []
    finally:
        for container_id in created:
            with contextlib.suppress(NotFound):
                docker_client.api.remove_container(container_id, force=True)

    wait_until(lambda: fresh(node1).inventory.get("containers") == [], 15, message=runner.tails)


# --- liveness --------------------------------------------------------------------------------
def test_killed_agent_becomes_unreachable_and_returns_as_the_same_node(
    runner, ctx, names, settings
):
    settings.FLEET_NODE_GRACE_SECONDS = 3
    _, key = make_token(ctx)
    agent = runner.start(names("n1"), join_token=key)
    node = wait_ready(agent, runner)
    count = Node.objects.count()
    pids = agent.pids()
    assert len(pids) >= 2, "expected the agent and its Celery pool child"

    agent.kill()  # waits until the main process and its pool child are gone

    def swept() -> Node | None:
        services.sweep_liveness()
        current = fresh(node)
        return current if current.state == NodeState.UNREACHABLE else None

    gone = wait_until(swept, 15, interval=0.25, message=runner.tails)
    silence = (gone.state_changed_at - gone.last_heartbeat_at).total_seconds()
    assert 3 <= silence < 6, silence

    back = runner.start(agent.name, data_dir=agent.data_dir)  # same data dir, no join token
    returned = wait_ready(back, runner)
    assert returned.pk == node.pk
    assert Node.objects.count() == count
    assert verbs(node) == ["joined", "became_ready", "became_unreachable", "became_ready"]


# --- credentials -----------------------------------------------------------------------------
def test_rotated_credential_reaches_the_agent_and_the_old_one_stops_working(
    runner, ctx, names, operator, live_server
):
    _, key = make_token(ctx)
    agent = runner.start(names("n1"), join_token=key)
    node = wait_ready(agent, runner)
    old = agent.state()["credential"]

    response = operator.post(f"/api/v1/nodes/{node.pk}/rotate-credential/")
    assert response.status_code == 200, response.content

    def switched() -> str | None:
        state = agent.state()
        return state["credential"] if state and state["credential"] != old else None

    new = wait_until(switched, 10, message=runner.tails)
    assert stat.S_IMODE((agent.data_dir / "agent.json").stat().st_mode) == 0o600

    def promoted() -> Node | None:
        current = fresh(node)
        return current if current.credential_hash == hash_secret(new) else None

    current = wait_until(promoted, 10, message=runner.tails)
    assert current.pending_credential_hash == ""
    assert next_heartbeat(node, runner).state == NodeState.READY
    assert post_heartbeat(live_server.url, old).status_code == 401
    assert "node credential rotated" in agent.output()
    # the worker's tasks use the new credential as well
    command = probe(operator, node)
    assert wait_command(command, runner).state == CommandState.SUCCEEDED
    assert agent.running()


def test_deleting_the_node_stops_its_agent_with_a_clear_message(runner, ctx, names, operator):
    _, key = make_token(ctx)
    agent = runner.start(names("n1"), join_token=key)
    node = wait_ready(agent, runner)

    response = operator.delete(f"/api/v1/nodes/{node.pk}/")
    assert response.status_code == 204

    code = agent.wait_exit(15)
    assert code != 0, agent.tail()
    assert "no longer accepts this node" in agent.output(), agent.tail()
    assert not Node.objects.filter(pk=node.pk).exists()


# --- outside failures ------------------------------------------------------------------------
@pytest.fixture
def docker_proxy() -> Iterator[UnixSocketProxy]:
    folder = Path(tempfile.mkdtemp(prefix="fleet-docker-"))  # short: unix socket paths are
    proxy = UnixSocketProxy(folder / "docker.sock")
    proxy.start()
    yield proxy
    proxy.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_docker_engine_down_raises_a_condition_and_the_node_stays_ready(
    runner, ctx, names, docker_proxy
):
    _, key = make_token(ctx)
    agent = runner.start(names("n1"), join_token=key, docker_url=docker_proxy.url)
    node = wait_ready(agent, runner)
    assert node.inventory["docker"]["reachable"] is True
    assert NodeCondition.DOCKER_UNREACHABLE not in node.conditions

    docker_proxy.stop()

    def condition_raised() -> Node | None:
        current = fresh(node)
        return current if NodeCondition.DOCKER_UNREACHABLE in current.conditions else None

    down = wait_until(condition_raised, 15, message=runner.tails)
    assert down.state == NodeState.READY and down.get_status() == NodeState.READY
    assert down.inventory["docker"]["reachable"] is False
    assert down.inventory["docker"]["error"]
    assert agent.running()

    docker_proxy.start()

    def condition_cleared() -> Node | None:
        current = fresh(node)
        return current if NodeCondition.DOCKER_UNREACHABLE not in current.conditions else None

    up = wait_until(condition_cleared, 20, message=runner.tails)
    assert up.state == NodeState.READY
    assert up.inventory["docker"]["reachable"] is True
    history = verbs(node)
    assert history[:2] == ["joined", "became_ready"]
    assert "condition_raised" in history and "condition_cleared" in history
    assert history.index("condition_raised") < history.index("condition_cleared")
    assert "became_unreachable" not in history


def test_wrong_server_url_makes_the_agent_retry_with_backoff_and_say_why(runner, names):
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    agent = runner.start(names("lost"), join_token="slmj_" + "y" * 43, server=server)

    wait_until(lambda: agent.output().count("cannot join yet") >= 2, 15, message=agent.tail)

    output = agent.output()
    assert f"cannot connect to {server}" in output
    assert "retrying in" in output
    assert agent.running()
    assert agent.state() is None
    agent.stop()
    assert not agent.running()
