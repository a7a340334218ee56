"""Nodes, join tokens, and commands sent to node agents."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import VersionedModel
from fleet.choices import CommandKind, CommandState, NodeState

JOIN_TOKEN_PREFIX = "slmj_"  # noqa: S105 - a prefix, not a secret
NODE_CREDENTIAL_PREFIX = "slmn_"


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def generate_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def default_join_token_expiry() -> Any:
    return timezone.now() + timedelta(hours=24)


class JoinToken(VersionedModel):
    """Lets agents join: limited uses, an expiry, labels applied to the nodes that use it."""

    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    labels = models.JSONField(default=dict, blank=True)
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0, editable=False)
    expires_at = models.DateTimeField(default=default_join_token_expiry)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    def get_status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        if self.uses >= self.max_uses:
            return "used up"
        return "active"


class Node(VersionedModel):
    """A host running the agent. ``state`` is written by heartbeats and the liveness sweep."""

    name = models.SlugField(max_length=63, unique=True)
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.PENDING)
    state_changed_at = models.DateTimeField(default=timezone.now)
    cordoned = models.BooleanField(default=False)
    draining = models.BooleanField(default=False)
    maintenance = models.BooleanField(default=False)
    labels = models.JSONField(default=dict, blank=True)
    conditions = models.JSONField(default=list, blank=True)
    credential_prefix = models.CharField(max_length=16)
    credential_hash = models.CharField(max_length=64, unique=True, editable=False)
    # A rotated credential waits here (hash + encrypted value) until the agent picks it up.
    pending_credential_hash = models.CharField(
        max_length=64, blank=True, db_index=True, editable=False
    )
    pending_credential_ciphertext = models.TextField(blank=True, editable=False)
    credential_rotated_at = models.DateTimeField(null=True, blank=True)
    inventory = models.JSONField(default=dict, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    clock_skew_seconds = models.FloatField(null=True, blank=True)
    joined_at = models.DateTimeField(default=timezone.now, editable=False)
    join_token = models.ForeignKey(
        JoinToken, models.SET_NULL, null=True, blank=True, related_name="nodes"
    )

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["state", "last_heartbeat_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue this node's agent consumes."""
        return f"node.{self.pk}"

    @property
    def schedulable(self) -> bool:
        return self.get_status() == NodeState.READY and not (
            self.cordoned or self.draining or self.maintenance
        )

    @property
    def replica_address(self) -> str:
        """Where the control plane (try it, the gateway) reaches this node's replicas: the
        address the agent advertises (``FLEET_AGENT_ADDRESS``, else its interface towards the
        control plane), else its host name."""
        host = (self.inventory or {}).get("host") or {}
        return str(host.get("address") or host.get("hostname") or self.name)

    @property
    def replica_bind_address(self) -> str:
        """The address replicas listen on: ``FLEET_AGENT_REPLICA_BIND`` when the agent sets it
        (e.g. 0.0.0.0), else the advertised address, else loopback (not joined yet)."""
        host = (self.inventory or {}).get("host") or {}
        return str(host.get("replica_bind") or host.get("address") or "127.0.0.1")

    def get_status(self, now: Any = None) -> str:
        """The state, judged again against the grace period (the sweep may lag a little)."""
        if self.state == NodeState.READY and self.last_heartbeat_at is not None:
            now = now or timezone.now()
            grace = settings.FLEET_NODE_GRACE_SECONDS
            if (now - self.last_heartbeat_at).total_seconds() > grace:
                return NodeState.UNREACHABLE
        return str(self.state)

    @property
    def flags(self) -> list[str]:
        return [name for name in ("cordoned", "draining", "maintenance") if getattr(self, name)]

    def usage(self) -> dict[str, float | None]:
        """Percent used of CPU, RAM and disk, and of the busiest GPU's memory."""
        inv = self.inventory or {}

        def percent(used: float | None, total: float | None) -> float | None:
            if not total or used is None:
                return None
            return round(100.0 * used / total, 1)

        memory = inv.get("memory") or {}
        disk = inv.get("disk") or {}
        gpus = inv.get("gpus") or []
        gpu_mem = [
            percent(
                g.get("memory_total_bytes", 0) - g.get("memory_free_bytes", 0),
                g.get("memory_total_bytes"),
            )
            for g in gpus
        ]
        return {
            "cpu": (inv.get("cpu") or {}).get("usage_percent"),
            "memory": percent(
                (memory.get("total_bytes") or 0) - (memory.get("available_bytes") or 0),
                memory.get("total_bytes"),
            ),
            "disk": percent(
                (disk.get("total_bytes") or 0) - (disk.get("free_bytes") or 0),
                disk.get("total_bytes"),
            ),
            "gpu_memory": max((g for g in gpu_mem if g is not None), default=None),
        }


class NodeCommand(models.Model):
    """An order to one node's agent, sent over its queue with an expiry; the row is the record."""

    node = models.ForeignKey(Node, models.CASCADE, related_name="commands")
    kind = models.CharField(max_length=32, choices=CommandKind.choices)
    state = models.CharField(max_length=16, choices=CommandState.choices, default=CommandState.SENT)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True)
    sent_count = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} → {self.node_id}"

    def get_state(self) -> str:
        if self.state == CommandState.SENT and self.expires_at <= timezone.now():
            return CommandState.EXPIRED
        return str(self.state)

    @property
    def round_trip_ms(self) -> float | None:
        if self.completed_at is None:
            return None
        return round((self.completed_at - self.created_at).total_seconds() * 1000, 1)
