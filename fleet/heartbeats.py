"""Heartbeat ingestion: validation, and batched writes with a constant number of queries.

A heartbeat is checked (credential, size, shape, sane ranges) and turned into a
:class:`HeartbeatRow`; :func:`ingest_batch` writes any number of rows with two queries (one
SELECT to authenticate every credential in the batch, one pipelined UPDATE). Only rows whose
node changes state or conditions take the slow path that writes history events.

The ASGI fast path (``fleet.asgi_fastpath``) gathers concurrent heartbeats into batches; the
DRF view writes a batch of one. Both share everything here.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils.dateparse import parse_datetime

from fleet.choices import NodeState
from fleet.models import Node, hash_secret

MAX_STRING = 512
MAX_GPUS = 64
MAX_CONTAINERS = 2000
MAX_BYTES_FIGURE = 2**63 - 1


class HeartbeatInvalid(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# --- Validation -----------------------------------------------------------------------------
class _Checker:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def obj(self, data: Any, path: str, *, required: bool = True) -> dict[str, Any]:
        if data is None and not required:
            return {}
        if not isinstance(data, dict):
            self.errors[path] = "must be an object"
            return {}
        return data

    def string(self, data: dict[str, Any], key: str, path: str, *, nullable: bool = True) -> None:
        value = data.get(key)
        if value is None:
            if not nullable:
                self.errors[f"{path}.{key}"] = "is required"
            return
        if not isinstance(value, str) or len(value) > MAX_STRING:
            self.errors[f"{path}.{key}"] = f"must be a string of at most {MAX_STRING} characters"

    def ip_address(self, data: dict[str, Any], key: str, path: str) -> None:
        value = data.get(key)
        if value in (None, ""):
            return
        try:
            ipaddress.ip_address(str(value))
        except ValueError:
            self.errors[f"{path}.{key}"] = "must be an IP address"

    def number(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        *,
        low: float = 0,
        high: float = MAX_BYTES_FIGURE,
        integer: bool = False,
        nullable: bool = True,
    ) -> None:
        value = data.get(key)
        if value is None:
            if not nullable:
                self.errors[f"{path}.{key}"] = "is required"
            return
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.errors[f"{path}.{key}"] = (
                "must be a whole number" if integer else "must be a number"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            self.errors[f"{path}.{key}"] = "must be finite"
        elif not low <= value <= high:
            self.errors[f"{path}.{key}"] = f"must be between {low:g} and {high:g}"


def validate_heartbeat(payload: Any) -> dict[str, Any]:
    """Check a heartbeat's shape, types and ranges; raises :class:`HeartbeatInvalid`."""
    c = _Checker()
    root = c.obj(payload, "body")
    if c.errors:
        raise HeartbeatInvalid(c.errors)
    c.string(root, "agent_version", "body", nullable=False)
    sent_at = root.get("sent_at")
    if not isinstance(sent_at, str) or parse_datetime(sent_at) is None:
        c.errors["body.sent_at"] = "must be an ISO 8601 date-time"
    host = c.obj(root.get("host"), "host")
    for key in ("hostname", "os", "kernel", "arch"):
        c.string(host, key, "host")
    for key in ("address", "replica_bind"):  # replicas bind it; it goes into their commands
        c.ip_address(host, key, "host")
    cpu = c.obj(root.get("cpu"), "cpu")
    c.string(cpu, "model", "cpu")
    c.number(cpu, "cores", "cpu", low=1, high=65536, integer=True, nullable=False)
    c.number(cpu, "load_1m", "cpu", high=1e6)
    c.number(cpu, "usage_percent", "cpu", high=100)
    memory = c.obj(root.get("memory"), "memory")
    c.number(memory, "total_bytes", "memory", integer=True, nullable=False)
    c.number(memory, "available_bytes", "memory", integer=True, nullable=False)
    disk = c.obj(root.get("disk"), "disk")
    c.string(disk, "path", "disk")
    c.number(disk, "total_bytes", "disk", integer=True, nullable=False)
    c.number(disk, "free_bytes", "disk", integer=True, nullable=False)
    gpus = root.get("gpus", [])
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        c.errors["gpus"] = f"must be a list of at most {MAX_GPUS} GPUs"
        gpus = []
    for index, gpu in enumerate(gpus):
        path = f"gpus[{index}]"
        gpu = c.obj(gpu, path)
        c.string(gpu, "name", path)
        c.string(gpu, "uuid", path)
        for key in ("memory_total_bytes", "memory_used_bytes", "memory_free_bytes"):
            c.number(gpu, key, path, integer=True)
        c.number(gpu, "utilization_percent", path, high=100)
        c.number(gpu, "temperature_c", path, low=-50, high=200)
    driver = c.obj(root.get("gpu_driver"), "gpu_driver", required=False)
    for key in ("driver_version", "cuda_version", "error"):
        c.string(driver, key, "gpu_driver")
    docker = c.obj(root.get("docker"), "docker")
    if not isinstance(docker.get("reachable"), bool):
        c.errors["docker.reachable"] = "must be true or false"
    for key in ("version", "api_version", "error"):
        c.string(docker, key, "docker")
    containers = root.get("containers", [])
    if not isinstance(containers, list) or len(containers) > MAX_CONTAINERS:
        c.errors["containers"] = f"must be a list of at most {MAX_CONTAINERS} containers"
        containers = []
    for index, container in enumerate(containers):
        path = f"containers[{index}]"
        container = c.obj(container, path)
        for key in ("id", "name", "image", "state", "status"):
            c.string(container, key, path)
        if not isinstance(container.get("labels", {}), dict):
            c.errors[f"{path}.labels"] = "must be an object"
    if c.errors:
        raise HeartbeatInvalid(c.errors)
    return root


# --- Ingestion ------------------------------------------------------------------------------
@dataclass
class HeartbeatRow:
    credential_hash: str
    credential_prefix: str
    inventory: dict[str, Any]
    received_at: datetime
    request_id: str = ""
    skew_seconds: float | None = None
    conditions: list[str] = field(default_factory=list)


@dataclass
class HeartbeatResult:
    status: int
    body: dict[str, Any]


def make_row(
    credential: str, payload: Any, received_at: datetime, request_id: str = ""
) -> HeartbeatRow:
    """Validate and prepare one heartbeat (no database access)."""
    from fleet.services import conditions_from_inventory

    inventory = validate_heartbeat(payload)
    sent_at = parse_datetime(inventory["sent_at"])
    skew = None
    if sent_at is not None:
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
        skew = round((sent_at - received_at).total_seconds(), 3)
    from fleet.models import NODE_CREDENTIAL_PREFIX

    return HeartbeatRow(
        credential_hash=hash_secret(credential),
        credential_prefix=credential[: len(NODE_CREDENTIAL_PREFIX) + 6],
        inventory=inventory,
        received_at=received_at,
        request_id=request_id,
        skew_seconds=skew,
        conditions=conditions_from_inventory(inventory, skew_seconds=skew),
    )


UNKNOWN_CREDENTIAL = HeartbeatResult(
    401,
    {
        "detail": "This node's credential is not accepted: the node was deleted or its "
        "credential replaced. Join again with a new join token.",
        "code": "node_credential_invalid",
    },
)

_UPDATE_SQL = (
    "UPDATE fleet_node SET inventory = %s, agent_version = %s, last_heartbeat_at = %s, "
    "clock_skew_seconds = %s WHERE id = %s"
)


def ingest_batch(rows: list[HeartbeatRow]) -> list[HeartbeatResult]:
    """Write a batch of heartbeats: one SELECT, one executemany UPDATE, slow path if needed."""
    from fleet import services

    hashes = sorted({row.credential_hash for row in rows})
    nodes: dict[str, Node] = {}
    pending: dict[str, Node] = {}
    for known in Node.objects.filter(
        Q(credential_hash__in=hashes) | Q(pending_credential_hash__in=hashes)
    ).only(
        "id",
        "name",
        "state",
        "conditions",
        "credential_hash",
        "pending_credential_hash",
        "pending_credential_ciphertext",
    ):
        nodes[known.credential_hash] = known
        if known.pending_credential_hash:
            pending[known.pending_credential_hash] = known
    results: list[HeartbeatResult] = []
    updates: list[tuple[Any, ...]] = []
    slow: list[tuple[HeartbeatRow, Node]] = []
    for row in rows:
        node = nodes.get(row.credential_hash)
        if node is None and row.credential_hash in pending:
            # first use of a rotated credential: promote it (old one stops working)
            node = pending[row.credential_hash]
            Node.objects.filter(pk=node.pk, pending_credential_hash=row.credential_hash).update(
                credential_hash=row.credential_hash,
                credential_prefix=row.credential_prefix,
                pending_credential_hash="",
                pending_credential_ciphertext="",
            )
            node.pending_credential_hash = node.pending_credential_ciphertext = ""
        if node is None:
            results.append(UNKNOWN_CREDENTIAL)
            continue
        updates.append(
            (
                json.dumps(row.inventory, separators=(",", ":")),
                str(row.inventory.get("agent_version", ""))[:40],
                row.received_at,
                row.skew_seconds,
                node.pk,
            )
        )
        if node.state != NodeState.READY or sorted(node.conditions or []) != sorted(row.conditions):
            slow.append((row, node))
        body: dict[str, Any] = {
            "node_id": node.pk,
            "name": node.name,
            "interval_seconds": settings.FLEET_HEARTBEAT_INTERVAL_SECONDS,
            "server_time": row.received_at.isoformat(),
        }
        if node.pending_credential_ciphertext:
            body["new_credential"] = services.pending_credential(node)
        results.append(HeartbeatResult(200, body))
    if updates:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(_UPDATE_SQL, updates)
    for row, node in slow:
        services.apply_heartbeat_transitions(
            node.pk,
            conditions=row.conditions,
            received_at=row.received_at,
            request_id=row.request_id,
        )
    return results


def handle_heartbeat(
    credential: str | None, body: bytes, received_at: datetime, request_id: str = ""
) -> HeartbeatResult:
    """The whole request for a batch of one (used by the DRF view)."""
    prepared = prepare(credential, body, received_at, request_id)
    if isinstance(prepared, HeartbeatResult):
        return prepared
    return ingest_batch([prepared])[0]


def too_large() -> HeartbeatResult:
    limit = settings.FLEET_HEARTBEAT_MAX_BYTES
    return HeartbeatResult(
        413, {"detail": f"A heartbeat is at most {limit} bytes.", "code": "too_large"}
    )


def prepare(
    credential: str | None, body: bytes, received_at: datetime, request_id: str = ""
) -> HeartbeatRow | HeartbeatResult:
    """Everything before the database: credential syntax, size, JSON, validation."""
    from fleet.models import NODE_CREDENTIAL_PREFIX

    if not credential or not credential.startswith(NODE_CREDENTIAL_PREFIX):
        return HeartbeatResult(
            401,
            {
                "detail": "Send the node credential as 'Authorization: Bearer slmn_…'.",
                "code": "not_authenticated",
            },
        )
    if len(body) > settings.FLEET_HEARTBEAT_MAX_BYTES:
        return too_large()
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return HeartbeatResult(
            400, {"detail": "The body is not valid JSON.", "code": "parse_error"}
        )
    try:
        return make_row(credential, payload, received_at, request_id)
    except HeartbeatInvalid as invalid:
        return HeartbeatResult(
            400,
            {
                "detail": f"The heartbeat is not valid: {invalid}",
                "code": "invalid",
                "errors": invalid.errors,
            },
        )
