"""Replica logs: fetched from the node's agent with a ``replica_logs`` command, kept here.

``request_logs`` sends the command (task ``fleet.agent.replica_logs``, fleet/agent/
replica_logs.py) asking for the container's last ``tail`` lines after the newest line
already kept; the agent answers over the usual command-result endpoint, so the lines land in
the command row's ``result``. ``collect`` merges answered commands into ``Replica.last_logs``
(the newest :data:`KEEP_LINES` lines, oldest first, each ``<timestamp> <text>``), so the
lines outlive the container: after the agent replaces a crashed container (which removes the
old one and its Docker logs) or after the replica is gone, the page and the API still show
what was fetched before. Docker itself keeps the output of every run of the *same*
container (restarts in place), so those come with the next fetch anyway.

Polling the page every 2 s while the panel is open is the "live" stream: each poll merges
what came back and sends the next command unless one is still in flight.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.errors import ConflictError, ServiceError
from core.history import ChangeContext
from deployments.choices import ReplicaState
from deployments.models import Replica
from fleet import services as fleet_services
from fleet.choices import CommandKind, CommandState
from fleet.models import NodeCommand

KEEP_LINES = 1000
MAX_TAIL = 1000
IN_FLIGHT_SECONDS = 10  # an unanswered command younger than this is not sent again


def kept_lines(replica: Replica) -> list[str]:
    return [line for line in (replica.last_logs or "").splitlines() if line]


def _commands(replica: Replica) -> Any:
    return NodeCommand.objects.filter(
        kind=CommandKind.REPLICA_LOGS, arguments__replica=replica.pk
    ).order_by("created_at", "pk")


def in_flight(replica: Replica) -> NodeCommand | None:
    """The newest unanswered, unexpired logs command for the replica sent recently."""
    recent = timezone.now() - timedelta(seconds=IN_FLIGHT_SECONDS)
    command = (
        _commands(replica)
        .filter(state=CommandState.SENT, created_at__gte=recent, expires_at__gt=timezone.now())
        .last()
    )
    return command


def last_error(replica: Replica) -> str:
    """The error of the newest answered command, when it failed ("" otherwise)."""
    command = _commands(replica).exclude(state=CommandState.SENT).last()
    if command is not None and command.state == CommandState.FAILED:
        return command.error
    return ""


def merge(kept: list[str], new: list[str], *, keep: int = KEEP_LINES) -> list[str]:
    """``kept`` plus the lines of ``new`` newer than its last one, the last ``keep`` lines.

    Lines start with a fixed-width UTC timestamp, so string order is time order.
    """
    newest = kept[-1].split(" ", 1)[0] if kept else ""
    fresh = [line for line in new if isinstance(line, str) and line.split(" ", 1)[0] > newest]
    return (kept + fresh)[-keep:]


@transaction.atomic
def collect(replica: Replica) -> Replica:
    """Merge the lines of answered commands not merged yet into the replica's kept lines."""
    row = Replica.objects.select_for_update().get(pk=replica.pk)
    answered = _commands(row).filter(state=CommandState.SUCCEEDED, completed_at__isnull=False)
    if row.logs_fetched_at is not None:
        answered = answered.filter(completed_at__gt=row.logs_fetched_at)
    commands = sorted(answered, key=lambda c: (c.completed_at, c.pk))
    if commands:
        lines = kept_lines(row)
        for command in commands:
            lines = merge(lines, list((command.result or {}).get("lines") or []))
        row.last_logs = "\n".join(lines)
        row.logs_fetched_at = commands[-1].completed_at
        row.save(update_fields=["last_logs", "logs_fetched_at"])
    replica.last_logs, replica.logs_fetched_at = row.last_logs, row.logs_fetched_at
    return replica


def can_fetch(replica: Replica) -> bool:
    return (
        replica.node_id is not None
        and bool(replica.container_name)
        and replica.state != ReplicaState.GONE
    )


def request_logs(ctx: ChangeContext, replica: Replica, tail: int = 200) -> NodeCommand:
    """Ask the replica's agent for its container's last ``tail`` lines (after the newest kept
    one); a command still in flight for it is returned instead of sending another."""
    if not 1 <= tail <= MAX_TAIL:
        raise ServiceError(f"Ask for 1 to {MAX_TAIL} lines.", field="tail")
    if not can_fetch(replica):
        raise ConflictError(
            "This replica has no container on a node (not placed yet, or gone); only the "
            "lines fetched before are kept."
        )
    pending = in_flight(replica)
    if pending is not None:
        return pending
    collect(replica)
    kept = kept_lines(replica)
    assert replica.node is not None
    return fleet_services.send_command(
        ctx,
        replica.node,
        CommandKind.REPLICA_LOGS,
        {
            "replica": replica.pk,
            "container_name": replica.container_name,
            "tail": tail,
            "since": kept[-1].split(" ", 1)[0] if kept else "",
        },
    )


def logs_text(replica: Replica) -> str:
    """The kept lines as a text file."""
    lines = kept_lines(collect(replica))
    return "\n".join(lines) + ("\n" if lines else "")
