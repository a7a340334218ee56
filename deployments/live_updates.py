"""Live updates of deployments for browsers (``deployment.<id>`` groups), sent on commit.

Inside a reconcile pass (:func:`collecting`) the messages are collected and sent on commit
after the pass's orders to agents (those are on the critical path of a start; browsers can
wait a few ms).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from core import live
from deployments.models import Deployment, Replica

_collecting = threading.local()  # a pass's live messages, sent after its agent orders


@contextmanager
def collecting() -> Iterator[None]:
    """Collect the live messages pushed inside, and send them on commit after the pass's
    orders (registered on leaving, so after every order registered inside)."""
    messages: list[tuple[str, str, dict[str, Any]]] = []
    _collecting.pending = messages
    try:
        yield
    finally:
        _collecting.pending = None
    if messages:  # registered last: runs after the orders the pass registered
        transaction.on_commit(lambda: _send_live(messages))


def push(deployment_id: int, kind: str, payload: dict[str, Any]) -> None:
    """On commit: tell browsers watching the deployment (``deployment.<id>``).

    Inside a pass the messages are collected and sent on commit after the pass's orders to
    agents (those are on the critical path of a start; browsers can wait a few ms).
    """
    group = f"deployment.{deployment_id}"
    pending: list[tuple[str, str, dict[str, Any]]] | None = getattr(_collecting, "pending", None)
    if pending is not None:
        pending.append((group, f"deployment.{kind}", payload))
        return
    transaction.on_commit(lambda: _send_live([(group, f"deployment.{kind}", payload)]))


def _send_live(messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    changed: dict[str, None] = {}
    for group, message_type, payload in messages:
        live.send(group, message_type, payload)
        changed[group] = None
    for group in changed:  # the list page: one notice per deployment and pass
        live.send(live.DEPLOYMENTS_GROUP, "deployments.changed", {"id": int(group.split(".")[1])})


def replica_payload(replica: Replica) -> dict[str, Any]:
    return {
        "id": replica.pk,
        "deployment": replica.deployment_id,
        "revision": replica.revision.number if replica.revision_id else None,
        "slot": replica.slot,
        "node": replica.node_id,
        "state": replica.state,
        "reason": replica.reason,
        "host_port": replica.host_port,
        "restarts": replica.restarts,
    }


def rollout_payload(rollout: Any) -> dict[str, Any]:
    return {
        "id": rollout.pk,
        "deployment": rollout.deployment_id,
        "from_revision": rollout.from_revision.number if rollout.from_revision_id else None,
        "to_revision": rollout.to_revision.number,
        "state": rollout.state,
        "is_rollback": rollout.is_rollback,
        "failure_reason": rollout.failure_reason,
        "steps": rollout.steps[-5:],
        "gate": {k: v for k, v in (rollout.gate or {}).items() if k in ("state", "summary")},
    }


def deployment_payload(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.pk,
        "state": deployment.state,
        "paused_reason": deployment.paused_reason,
        "current_revision": (
            deployment.current_revision.number if deployment.current_revision else None
        ),
        "stable_revision": deployment.stable_revision.number
        if deployment.stable_revision
        else None,
        "version": deployment.version,
    }
