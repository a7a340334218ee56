"""Replica logs on the control side: the command, merging answers, keeping lines, pages, API."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConflictError
from core.history import ChangeContext
from deployments import logs
from deployments.choices import ReplicaState
from deployments.models import Replica
from fleet import services as fleet_services
from fleet.choices import CommandKind, CommandState
from fleet.models import NodeCommand
from tests.deployments.builders import deploy, gguf_variant, node

pytestmark = pytest.mark.django_db


@pytest.fixture
def replica(admin_user) -> Replica:
    deployment = deploy(admin_user, "logs-demo", gguf_variant())
    return Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=0,
        node=node("logs-node"),
        state=ReplicaState.AVAILABLE,
        container_name="fleet-logs-demo-r1-s0-1",
        host_port=18080,
    )


def stamp(second: int) -> str:
    return f"2025-01-02T03:04:{second:02d}.000000000Z"


def answer(command: NodeCommand, seconds: list[int]) -> None:
    lines = [f"{stamp(s)} line {s}" for s in seconds]
    fleet_services.complete_command(
        command.node, command.pk, result={"lines": lines, "found": True}, error=None
    )


def test_request_sends_a_replica_logs_command(admin_user, replica: Replica) -> None:
    command = logs.request_logs(ChangeContext.for_user(admin_user), replica, tail=50)
    assert command.kind == CommandKind.REPLICA_LOGS
    assert command.node_id == replica.node_id
    assert command.arguments == {
        "replica": replica.pk,
        "container_name": replica.container_name,
        "tail": 50,
        "since": "",
    }
    # still in flight: the same command, no second one on the node's queue
    assert logs.request_logs(ChangeContext.for_user(admin_user), replica) == command


def test_answers_are_merged_kept_and_asked_for_since(admin_user, replica: Replica) -> None:
    ctx = ChangeContext.for_user(admin_user)
    first = logs.request_logs(ctx, replica)
    answer(first, [1, 2, 3])
    second = logs.request_logs(ctx, replica)
    assert second.pk != first.pk
    assert second.arguments["since"] == stamp(3)
    answer(second, [3, 4])  # Docker's since is inclusive: line 3 comes again
    logs.collect(replica)
    assert logs.kept_lines(replica) == [f"{stamp(s)} line {s}" for s in (1, 2, 3, 4)]
    replica.refresh_from_db()
    assert replica.logs_fetched_at is not None
    # merged once only
    logs.collect(replica)
    assert len(logs.kept_lines(replica)) == 4


def test_kept_lines_outlive_the_container(admin_user, replica: Replica) -> None:
    answer(logs.request_logs(ChangeContext.for_user(admin_user), replica), [1, 2])
    logs.collect(replica)
    Replica.objects.filter(pk=replica.pk).update(state=ReplicaState.GONE, container_name="")
    replica.refresh_from_db()
    with pytest.raises(ConflictError, match="only the lines fetched before are kept"):
        logs.request_logs(ChangeContext.for_user(admin_user), replica)
    assert logs.logs_text(replica) == f"{stamp(1)} line 1\n{stamp(2)} line 2\n"


def test_merge_keeps_the_newest_lines() -> None:
    kept = [f"{stamp(s)} a" for s in range(5)]
    assert logs.merge(kept, [f"{stamp(9)} b"], keep=3) == [kept[3], kept[4], f"{stamp(9)} b"]


def test_a_failed_command_shows_its_error(admin_user, replica: Replica) -> None:
    command = logs.request_logs(ChangeContext.for_user(admin_user), replica)
    fleet_services.complete_command(command.node, command.pk, result=None, error="engine down")
    assert NodeCommand.objects.get(pk=command.pk).state == CommandState.FAILED
    assert logs.last_error(replica) == "engine down"


def test_tail_is_bounded(admin_user, replica: Replica) -> None:
    from core.errors import ServiceError

    with pytest.raises(ServiceError, match="1 to 1000"):
        logs.request_logs(ChangeContext.for_user(admin_user), replica, tail=0)


def test_page_panel_and_download(client, operator_user, replica: Replica) -> None:
    client.force_login(operator_user)
    response = client.post(f"/deployments/replicas/{replica.pk}/logs/")
    assert response.status_code == 200
    assert b"Fetching from the node" in response.content
    command = NodeCommand.objects.get(kind=CommandKind.REPLICA_LOGS)
    answer(command, [7])
    response = client.post(f"/deployments/replicas/{replica.pk}/logs/")
    assert b"line 7" in response.content
    download = client.get(f"/deployments/replicas/{replica.pk}/logs/download/")
    assert download["Content-Type"].startswith("text/plain")
    assert download["Content-Disposition"].startswith('attachment; filename="logs-demo-s0-')
    assert download.content.decode() == f"{stamp(7)} line 7\n"
    detail = client.get(f"/deployments/{replica.deployment_id}/")
    assert b'data-testid="logs"' in detail.content and b'data-testid="try-it"' in detail.content


def test_viewers_see_no_logs_or_try_it(client, viewer_user, replica: Replica) -> None:
    client.force_login(viewer_user)
    detail = client.get(f"/deployments/{replica.deployment_id}/")
    assert b'data-testid="logs"' not in detail.content
    assert client.post(f"/deployments/replicas/{replica.pk}/logs/").status_code == 403


def test_api_post_then_get(api_client_for, replica: Replica) -> None:
    api = api_client_for("operator")
    response = api.post(f"/api/v1/replicas/{replica.pk}/logs/", {"tail": 20}, format="json")
    assert response.status_code == 202, response.content
    body: dict[str, Any] = response.json()
    assert body["kind"] == "replica_logs" and body["arguments"]["tail"] == 20
    answer(NodeCommand.objects.get(pk=body["id"]), [1])
    kept = api.get(f"/api/v1/replicas/{replica.pk}/logs/").json()
    assert kept["lines"] == [f"{stamp(1)} line 1"] and kept["pending_command"] is None
    viewer = api_client_for("viewer")
    assert viewer.get(f"/api/v1/replicas/{replica.pk}/logs/").status_code == 403
