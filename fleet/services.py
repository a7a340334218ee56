"""Use cases for nodes: join tokens, joining, heartbeats, liveness, operator actions, commands."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core import crypto
from core.choices import ActorType
from core.errors import ConflictError, ServiceError, check_version
from core.history import REDACTED, ChangeContext, diff, record, record_many, snapshot
from fleet.choices import CommandKind, CommandState, NodeCondition, NodeState
from fleet.models import (
    JOIN_TOKEN_PREFIX,
    NODE_CREDENTIAL_PREFIX,
    JoinToken,
    Node,
    NodeCommand,
    generate_secret,
    hash_secret,
)

NODE_FIELDS = ("name", "cordoned", "draining", "maintenance", "labels")
JOIN_TOKEN_FIELDS = ("name", "labels", "max_uses", "expires_at")
MAX_LABELS = 64


def node_context(node: Node, *, request_id: str = "", reason: str = "") -> ChangeContext:
    return ChangeContext(
        actor_type=ActorType.NODE,
        actor_name=node.name,
        actor_id=str(node.pk),
        request_id=request_id,
        reason=reason,
    )


def validate_labels(labels: Any) -> dict[str, str]:
    """Labels: up to 64 ``key: value`` string pairs with Kubernetes-like key/value syntax."""
    if not isinstance(labels, dict):
        raise ServiceError("Labels must be an object of key: value strings.", field="labels")
    if len(labels) > MAX_LABELS:
        raise ServiceError(f"At most {MAX_LABELS} labels.", field="labels")
    key_re = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
    value_re = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
    clean: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key_re.match(key):
            raise ServiceError(
                f"Label key {key!r} is not valid: 1-63 letters, digits, '.', '_', '-', '/', "
                "starting and ending with a letter or digit.",
                field="labels",
            )
        if not isinstance(value, str) or not value_re.match(value):
            raise ServiceError(
                f"Label {key}={value!r}: values are up to 63 letters, digits, '.', '_' or '-'.",
                field="labels",
            )
        clean[key] = value
    return clean


# --- Join tokens ----------------------------------------------------------------------------
@transaction.atomic
def create_join_token(
    ctx: ChangeContext,
    *,
    name: str,
    max_uses: int = 1,
    expires_at: datetime | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[JoinToken, str]:
    name = name.strip()
    if not name:
        raise ServiceError("Give the join token a name.", field="name")
    if max_uses < 1:
        raise ServiceError("A join token needs at least one use.", field="max_uses")
    expires_at = expires_at or timezone.now() + timedelta(hours=24)
    if expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    key = generate_secret(JOIN_TOKEN_PREFIX)
    token = JoinToken.objects.create(
        name=name,
        key_prefix=key[: len(JOIN_TOKEN_PREFIX) + 6],
        key_hash=hash_secret(key),
        labels=validate_labels(labels or {}),
        max_uses=max_uses,
        expires_at=expires_at,
        created_by=ctx.user,
    )
    record(ctx, "created", token, changes=diff({}, snapshot(token, JOIN_TOKEN_FIELDS)))
    return token, key


@transaction.atomic
def revoke_join_token(ctx: ChangeContext, token: JoinToken) -> JoinToken:
    token = JoinToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.version += 1
        token.save(update_fields=["revoked_at", "version"])
        record(ctx, "revoked", token)
    return token


# --- Joining --------------------------------------------------------------------------------
class JoinRefused(ServiceError):
    status_code = 403
    code = "join_refused"


def _new_credential() -> tuple[str, str, str]:
    credential = generate_secret(NODE_CREDENTIAL_PREFIX)
    return credential, credential[: len(NODE_CREDENTIAL_PREFIX) + 6], hash_secret(credential)


@transaction.atomic
def join_node(
    *, join_key: str, name: str, inventory: dict[str, Any] | None = None
) -> tuple[Node, str]:
    """Register a node with a join token; returns the node and its new credential.

    Fails closed: unknown, revoked, expired or used-up tokens are refused, and so is a name
    held by a node that is not unreachable. An unreachable node of that name is taken over
    (same identity, new credential), so a host that lost its data dir can come back.
    """
    token = (
        JoinToken.objects.select_for_update().filter(key_hash=hash_secret(join_key or "")).first()
    )
    if token is None:
        raise JoinRefused("Unknown join token. Create one under Nodes → Join tokens.")
    status = token.get_status()
    if status != "active":
        raise JoinRefused(
            f"This join token is {status}. Create a new one under Nodes → Join tokens."
        )
    existing = Node.objects.select_for_update().filter(name=name).first()
    credential, prefix, credential_hash = _new_credential()
    now = timezone.now()
    if existing is not None:
        if existing.get_status() != NodeState.UNREACHABLE:
            raise ConflictError(
                f"A live node is already called {name!r}. Pick another --name, or delete that "
                "node first if it is gone.",
                field="name",
            )
        node = existing
        node.credential_hash, node.credential_prefix = credential_hash, prefix
        node.pending_credential_hash = node.pending_credential_ciphertext = ""
        node.state, node.state_changed_at = NodeState.PENDING, now
        node.labels = {**node.labels, **token.labels}
        node.join_token = token
        node.version += 1
        node.save()
        verb = "rejoined"
    else:
        node = Node(
            name=name,
            credential_hash=credential_hash,
            credential_prefix=prefix,
            labels=dict(token.labels),
            join_token=token,
            inventory=inventory or {},
        )
        try:
            with transaction.atomic():
                node.save()
        except IntegrityError:
            raise ConflictError(f"A node is already called {name!r}.", field="name") from None
        verb = "joined"
    token.uses += 1
    token.save(update_fields=["uses"])
    changes = diff({}, snapshot(node, NODE_FIELDS)) if verb == "joined" else {}
    record(node_context(node, reason=f"join token {token.name}"), verb, node, changes=changes)
    return node, credential


# --- Credentials ----------------------------------------------------------------------------
def authenticate_node(credential: str) -> Node | None:
    """The node for a credential; a pending (rotated) credential is promoted on first use."""
    if not credential.startswith(NODE_CREDENTIAL_PREFIX):
        return None
    digest = hash_secret(credential)
    node = Node.objects.filter(credential_hash=digest).first()
    if node is not None:
        return node
    node = Node.objects.filter(pending_credential_hash=digest).first()
    if node is None:
        return None
    Node.objects.filter(pk=node.pk, pending_credential_hash=digest).update(
        credential_hash=digest,
        credential_prefix=credential[: len(NODE_CREDENTIAL_PREFIX) + 6],
        pending_credential_hash="",
        pending_credential_ciphertext="",
    )
    node.refresh_from_db()
    return node


@transaction.atomic
def rotate_credential(ctx: ChangeContext, node: Node) -> Node:
    """Issue a new credential; the agent gets it with its next heartbeat answer and switches.

    The old credential works until the agent first uses the new one, so nothing breaks in
    between; a second rotation before pick-up replaces the pending credential.
    """
    node = Node.objects.select_for_update().get(pk=node.pk)
    credential, _, credential_hash = _new_credential()
    node.pending_credential_hash = credential_hash
    node.pending_credential_ciphertext = crypto.encrypt(credential)
    node.credential_rotated_at = timezone.now()
    node.version += 1
    node.save()
    record(
        ctx,
        "credential_rotated",
        node,
        changes={"credential": {"before": REDACTED, "after": REDACTED}},
    )
    return node


def pending_credential(node: Node) -> str | None:
    if not node.pending_credential_ciphertext:
        return None
    return crypto.decrypt(node.pending_credential_ciphertext)


# --- Heartbeats and liveness ----------------------------------------------------------------
def conditions_from_inventory(
    inventory: dict[str, Any], *, skew_seconds: float | None
) -> list[str]:
    conditions = []
    if not (inventory.get("docker") or {}).get("reachable", False):
        conditions.append(NodeCondition.DOCKER_UNREACHABLE.value)
    disk = inventory.get("disk") or {}
    total, free = disk.get("total_bytes") or 0, disk.get("free_bytes") or 0
    if total and 100.0 * free / total < settings.FLEET_NODE_DISK_FREE_MIN_PERCENT:
        conditions.append(NodeCondition.DISK_NEARLY_FULL.value)
    if skew_seconds is not None and abs(skew_seconds) > settings.FLEET_NODE_CLOCK_SKEW_SECONDS:
        conditions.append(NodeCondition.CLOCK_SKEW.value)
    return conditions


@transaction.atomic
def apply_heartbeat_transitions(
    node_id: int, *, conditions: list[str], received_at: datetime, request_id: str = ""
) -> Node | None:
    """The slow path of a heartbeat: state or conditions changed, so write history events."""
    node = Node.objects.select_for_update().filter(pk=node_id).first()
    if node is None:
        return None
    ctx = node_context(node, request_id=request_id)
    if node.state != NodeState.READY:
        before = node.state
        node.state, node.state_changed_at = NodeState.READY, received_at
        record(
            ctx, "became_ready", node, changes={"state": {"before": before, "after": node.state}}
        )
    old = set(node.conditions or [])
    new = set(conditions)
    for condition in sorted(new - old):
        record(ctx, "condition_raised", node, changes={condition: {"before": False, "after": True}})
    for condition in sorted(old - new):
        record(
            ctx, "condition_cleared", node, changes={condition: {"before": True, "after": False}}
        )
    node.conditions = sorted(new)
    node.save(update_fields=["state", "state_changed_at", "conditions"])
    return node


def sweep_liveness(now: datetime | None = None) -> list[int]:
    """Mark ready nodes whose last heartbeat is older than the grace period unreachable.

    Set-based: one locked SELECT, one UPDATE and one INSERT of history events however many
    nodes went silent together (a rack losing power must not stall the sweep for minutes).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FLEET_NODE_GRACE_SECONDS)
    with transaction.atomic():
        stale = list(
            Node.objects.select_for_update(skip_locked=True)
            .filter(state=NodeState.READY, last_heartbeat_at__lt=cutoff)
            .only("pk", "name")
        )
        if not stale:
            return []
        Node.objects.filter(pk__in=[node.pk for node in stale]).update(
            state=NodeState.UNREACHABLE, state_changed_at=now
        )
        record_many(
            ChangeContext.system("liveness"),
            "became_unreachable",
            list(stale),
            changes={"state": {"before": NodeState.READY, "after": NodeState.UNREACHABLE}},
        )
    return [node.pk for node in stale]


# --- Operator actions -----------------------------------------------------------------------
@transaction.atomic
def update_node(
    ctx: ChangeContext, node: Node, *, expected_version: int | None = None, **fields: Any
) -> Node:
    """Cordon/uncordon, drain, maintenance and labels. Draining or maintenance implies cordoned."""
    node = Node.objects.select_for_update().get(pk=node.pk)
    check_version(node.version, expected_version, f"Node {node.name}")
    allowed = {"cordoned", "draining", "maintenance", "labels"}
    unknown = set(fields) - allowed
    if unknown:
        raise ServiceError(f"Cannot change {', '.join(sorted(unknown))} on a node.")
    before = snapshot(node, NODE_FIELDS)
    if "labels" in fields:
        fields["labels"] = validate_labels(fields["labels"])
    for name, value in fields.items():
        setattr(node, name, value)
    if (node.draining or node.maintenance) and not node.cordoned:
        if fields.get("cordoned") is False:
            raise ConflictError("A draining or maintenance node stays cordoned; clear those first.")
        node.cordoned = True
    changes = diff(before, snapshot(node, NODE_FIELDS))
    if not changes:
        return node
    node.version += 1
    node.save()
    record(ctx, "updated", node, changes=changes)
    return node


@transaction.atomic
def delete_node(ctx: ChangeContext, node: Node) -> None:
    """Forget a node; its credential stops working at once and its agent exits."""
    record(ctx, "deleted", node, changes=diff(snapshot(node, NODE_FIELDS), {}))
    node.delete()


# --- Commands -------------------------------------------------------------------------------
def send_command(
    ctx: ChangeContext, node: Node, kind: str, arguments: dict[str, Any] | None = None
) -> NodeCommand:
    """Create the command row, then (on commit) put it on the node's queue with its expiry."""
    ttl = settings.FLEET_COMMAND_TTL_SECONDS
    with transaction.atomic():
        command = NodeCommand.objects.create(
            node=node,
            kind=CommandKind(kind),
            arguments=arguments or {},
            requested_by=ctx.actor_name,
            expires_at=timezone.now() + timedelta(seconds=ttl),
        )
        transaction.on_commit(lambda: dispatch_command(command.pk))
    return command


def dispatch_command(command_id: int) -> None:
    """Send a command to its node's queue; a lost message is re-sent by the reconciler."""
    from config.celery import app

    command = NodeCommand.objects.select_related("node").filter(pk=command_id).first()
    if command is None or command.get_state() != CommandState.SENT:
        return
    app.send_task(
        f"fleet.agent.{command.kind}",
        args=[command.pk, command.arguments],
        queue=command.node.queue,
        expires=command.expires_at,
    )
    NodeCommand.objects.filter(pk=command.pk).update(
        last_sent_at=timezone.now(), sent_count=F("sent_count") + 1
    )


@transaction.atomic
def complete_command(
    node: Node, command_id: int, *, result: dict[str, Any] | None, error: str | None
) -> NodeCommand:
    command = NodeCommand.objects.select_for_update().filter(pk=command_id, node=node).first()
    if command is None:
        raise ServiceError("No such command for this node.")
    if command.state != CommandState.SENT:
        return command  # a duplicate answer changes nothing
    command.completed_at = timezone.now()
    if command.expires_at < command.completed_at:
        command.state = CommandState.EXPIRED
    elif error:
        command.state, command.error = CommandState.FAILED, error[:4000]
    else:
        command.state, command.result = CommandState.SUCCEEDED, result or {}
    command.save()
    return command
