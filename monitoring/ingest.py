"""Metric ingestion: validate an agent's batch, store it with a constant number of queries.

An agent sends ``{"agent_version": "...", "rounds": [round, ...]}``; each round is one
collection pass (every 5 s; several after an outage, when the agent flushes its buffer)::

    {"t": 1764140000000,                       # epoch milliseconds, the agent's clock
     "node": {"cpu_percent": 12.5, ..., "gpus": [{"index": 0, "gpu_utilization_percent": 40}]},
     "replicas": [{"replica": 12, "values": {"generated_tokens_per_s": 31.5, ...}}]}

Names are the fleet schema (``monitoring.choices``). The shape is checked strictly (a
malformed body is refused whole, 400, and the agent drops it); single values that cannot be
stored (an unknown name, a replica that is not on this node, a time outside what is kept)
are skipped and listed in the answer, and everything else is stored.

:func:`store` writes any number of prepared batches (from many agents, gathered by the ASGI
fast path) with at most four queries: replicas not cached yet, series not cached yet (one
upsert and one select), and one multi-row insert of every sample (``unnest`` of three
arrays, ``ON CONFLICT DO NOTHING``: a re-sent batch is stored once). PostgreSQL's COPY is
faster still but cannot skip duplicates; at 2,000 samples/s the insert costs a few percent
of a core (bench/live_metrics.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from monitoring import partitions
from monitoring.choices import GPU_METRICS, NODE_METRICS, REPLICA_METRICS, Scope

MAX_ROUNDS = 1000  # > 1 h of 5 s rounds: the agent's whole outage buffer fits in one batch
MAX_REPLICAS_PER_ROUND = 1000
MAX_GPUS = 64
MAX_VALUES = 64
MAX_REJECTED_LISTED = 20
# Samples older than this when stored may land in an already rolled-up minute: mark it.
LATE_AFTER = timedelta(seconds=90)
REPLICA_CACHE_S = 30.0


class MetricsInvalid(Exception):
    """The body's shape is wrong; nothing of it was stored."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Value:
    """One figure before storage: the series key, the time and the value."""

    replica_id: int  # 0 for node series
    name: str
    device: str
    ts: datetime
    value: float


@dataclass
class Prepared:
    """A validated batch of one node, ready for :func:`store`."""

    node_id: int
    values: list[Value]
    rejected: list[str] = field(default_factory=list)
    rejected_count: int = 0

    def reject(self, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append(reason)


@dataclass
class Stored:
    """What one batch came to (the answer to its agent)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    rejected_count: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected_count,
            "rejected_reasons": self.rejected,
        }


@dataclass(frozen=True)
class LivePoint:
    """A stored sample as the browsers get it (``monitoring.live``)."""

    series_id: int
    node_id: int
    deployment_id: int | None
    replica_id: int
    name: str
    device: str
    t_ms: int
    value: float


# --- Validation ------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _id(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        return None
    return value


def prepare(node_id: int, payload: Any, *, now: datetime | None = None) -> Prepared:
    """Check a batch; raises :class:`MetricsInvalid` for a wrong shape (nothing stored)."""
    now = now or datetime.now(UTC)
    errors: dict[str, str] = {}
    if not isinstance(payload, dict):
        raise MetricsInvalid({"body": "must be a JSON object"})
    rounds = payload.get("rounds")
    if not isinstance(rounds, list) or not 0 < len(rounds) <= MAX_ROUNDS:
        raise MetricsInvalid({"rounds": f"must be a list of 1 to {MAX_ROUNDS} rounds"})
    oldest = now - timedelta(hours=settings.FLEET_METRICS_RAW_RETENTION_HOURS)
    newest = now + timedelta(seconds=settings.FLEET_METRICS_MAX_FUTURE_SECONDS)
    prepared = Prepared(node_id, [])
    for position, entry in enumerate(rounds):
        path = f"rounds[{position}]"
        if not isinstance(entry, dict):
            errors[path] = "must be an object"
            continue
        t_ms = _id(entry.get("t"))
        if t_ms is None:
            errors[f"{path}.t"] = "must be the collection time in epoch milliseconds"
            continue
        ts = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        node = entry.get("node", {})
        replicas = entry.get("replicas", [])
        if not isinstance(node, dict):
            errors[f"{path}.node"] = "must be an object"
            continue
        if not isinstance(replicas, list) or len(replicas) > MAX_REPLICAS_PER_ROUND:
            errors[f"{path}.replicas"] = f"must be a list of at most {MAX_REPLICAS_PER_ROUND}"
            continue
        if not oldest <= ts <= newest:
            when = "older than the raw samples kept" if ts < oldest else "in the future"
            prepared.reject(f"{path}: collected at {ts.isoformat()}, {when}; check the clock")
            continue
        _node_values(prepared, node, ts, path, errors)
        for index, replica in enumerate(replicas):
            _replica_values(prepared, replica, ts, f"{path}.replicas[{index}]", errors)
        if len(errors) > MAX_REJECTED_LISTED:
            break
    if errors:
        raise MetricsInvalid(errors)
    return prepared


def _node_values(
    prepared: Prepared, node: dict[str, Any], ts: datetime, path: str, errors: dict[str, str]
) -> None:
    gpus = node.get("gpus", [])
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        errors[f"{path}.node.gpus"] = f"must be a list of at most {MAX_GPUS} GPUs"
        return
    for name, raw in node.items():
        if name == "gpus" or raw is None:
            continue
        _add(prepared, 0, name, "", raw, ts, f"{path}.node.{name}", NODE_METRICS - GPU_METRICS)
    for index, gpu in enumerate(gpus):
        gpu_path = f"{path}.node.gpus[{index}]"
        if not isinstance(gpu, dict) or not isinstance(gpu.get("index"), int):
            errors[gpu_path] = "must be an object with an integer index"
            continue
        device = str(gpu["index"])
        for name, raw in gpu.items():
            if name == "index" or raw is None:
                continue
            _add(prepared, 0, name, device, raw, ts, f"{gpu_path}.{name}", GPU_METRICS)


def _replica_values(
    prepared: Prepared, replica: Any, ts: datetime, path: str, errors: dict[str, str]
) -> None:
    if not isinstance(replica, dict):
        errors[path] = "must be an object"
        return
    replica_id = _id(replica.get("replica"))
    values = replica.get("values")
    if replica_id is None:
        errors[f"{path}.replica"] = "must be the replica's id"
        return
    if not isinstance(values, dict) or len(values) > MAX_VALUES:
        errors[f"{path}.values"] = f"must be an object of at most {MAX_VALUES} values"
        return
    for name, raw in values.items():
        if raw is not None:
            _add(prepared, replica_id, name, "", raw, ts, f"{path}.{name}", REPLICA_METRICS)


def _add(
    prepared: Prepared,
    replica_id: int,
    name: str,
    device: str,
    raw: Any,
    ts: datetime,
    path: str,
    known: frozenset[str],
) -> None:
    if name not in known:
        prepared.reject(f"{path}: unknown metric {name!r} (see docs/monitoring.md)")
        return
    value = _number(raw)
    if value is None:
        prepared.reject(f"{path}: {raw!r} is not a finite number")
        return
    prepared.values.append(Value(replica_id, name, device, ts, value))


# --- Storage ---------------------------------------------------------------------------------
SeriesKey = tuple[int, int, str, str]  # (node, replica, name, device)


class _Caches:
    """Per-process caches: series ids (never change) and replica owners (short-lived)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.series: dict[SeriesKey, int] = {}
        self.replicas: dict[int, tuple[int, int, float]] = {}  # id -> (node, deployment, at)

    def clear(self) -> None:
        with self.lock:
            self.series.clear()
            self.replicas.clear()


caches = _Caches()


def _replica_owners(replica_ids: set[int]) -> dict[int, tuple[int, int]]:
    """replica id -> (node id, deployment id) for replicas that exist (cached briefly)."""
    from deployments.models import Replica

    now = time.monotonic()
    found: dict[int, tuple[int, int]] = {}
    missing: list[int] = []
    for replica_id in replica_ids:
        cached = caches.replicas.get(replica_id)
        if cached is not None and now - cached[2] < REPLICA_CACHE_S:
            found[replica_id] = (cached[0], cached[1])
        else:
            missing.append(replica_id)
    if missing:
        rows = Replica.objects.filter(pk__in=missing, node__isnull=False).values_list(
            "pk", "node_id", "deployment_id"
        )
        for replica_id, node_id, deployment_id in rows:
            found[replica_id] = (node_id, deployment_id)
            caches.replicas[replica_id] = (node_id, deployment_id, now)
    return found


def _series_ids(keys: dict[SeriesKey, int | None]) -> dict[SeriesKey, int]:
    """Series ids for ``keys`` (key -> deployment id), creating the missing series."""
    from monitoring.models import Series

    ids = {key: caches.series[key] for key in keys if key in caches.series}
    missing = [key for key in keys if key not in ids]
    if not missing:
        return ids
    Series.objects.bulk_create(
        [
            Series(
                scope=Scope.REPLICA if replica else Scope.NODE,
                node_id=node,
                replica_id=replica,
                name=name,
                device=device,
                deployment_id=keys[(node, replica, name, device)],
            )
            for node, replica, name, device in missing
        ],
        ignore_conflicts=True,
    )
    nodes = {key[0] for key in missing}
    names = {key[2] for key in missing}
    wanted = set(missing)
    for row in Series.objects.filter(node_id__in=nodes, name__in=names).values_list(
        "id", "node_id", "replica_id", "name", "device"
    ):
        key = (row[1], row[2], row[3], row[4])
        if key in wanted:
            ids[key] = row[0]
            caches.series[key] = row[0]
    return ids


def _insert(rows: list[tuple[int, datetime, float]]) -> int:
    """Insert samples, skipping ones already stored; the number inserted."""
    if not rows:
        return 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "INSERT INTO monitoring_sample (series_id, ts, value) "
                "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[]) "
                "ON CONFLICT DO NOTHING",
                [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
            )
            return int(cursor.rowcount)
        inserted = 0  # other databases: one statement per row, duplicates skipped
        for row in rows:
            cursor.execute(
                "INSERT INTO monitoring_sample (series_id, ts, value) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                list(row),
            )
            inserted += max(0, int(cursor.rowcount))
        return inserted


def store(batches: list[Prepared]) -> tuple[list[Stored], list[LivePoint]]:
    """Write every batch in one transaction; per-batch answers and the points to publish."""
    from monitoring.models import RollupState

    now = datetime.now(UTC)
    answers = [Stored(rejected=list(b.rejected), rejected_count=b.rejected_count) for b in batches]
    owners = _replica_owners({v.replica_id for b in batches for v in b.values if v.replica_id})
    keys: dict[SeriesKey, int | None] = {}
    kept: list[tuple[int, Stored, SeriesKey, Value, int | None]] = []
    for batch, answer in zip(batches, answers, strict=True):
        for value in batch.values:
            deployment_id: int | None = None
            if value.replica_id:
                owner = owners.get(value.replica_id)
                if owner is None or owner[0] != batch.node_id:
                    answer.rejected_count += 1
                    if len(answer.rejected) < MAX_REJECTED_LISTED:
                        answer.rejected.append(
                            f"replica {value.replica_id} is not on this node; "
                            f"its {value.name} was not stored"
                        )
                    continue
                deployment_id = owner[1]
            key = (batch.node_id, value.replica_id, value.name, value.device)
            keys[key] = deployment_id
            kept.append((batch.node_id, answer, key, value, deployment_id))
    if not kept:
        return answers, []
    with transaction.atomic():
        ids = _series_ids(keys)
        partitions.ensure(partitions.SAMPLES, {item[3].ts for item in kept})
        # One row per (series, ts): a batch repeating itself keeps the first value.
        rows: dict[tuple[int, datetime], float] = {}
        for _, answer, key, value, _ in kept:
            slot = (ids[key], value.ts)
            if slot in rows:
                answer.duplicates += 1
            else:
                rows[slot] = value.value
        inserted = _insert([(s, ts, v) for (s, ts), v in rows.items()])
        earliest = min(item[3].ts for item in kept)
        if earliest < now - LATE_AFTER:
            _mark_dirty(RollupState, earliest)
    # Attribute accepted vs already-stored: exact per batch when nothing was duplicate.
    duplicates_total = len(rows) - inserted
    for _, answer, _, _, _ in kept:
        answer.accepted += 1
    if duplicates_total:
        _spread_duplicates(answers, duplicates_total)
    points = [
        LivePoint(
            series_id=ids[key],
            node_id=node_id,
            deployment_id=deployment_id,
            replica_id=value.replica_id,
            name=value.name,
            device=value.device,
            t_ms=int(value.ts.timestamp() * 1000),
            value=value.value,
        )
        for node_id, _, key, value, deployment_id in kept
    ]
    return answers, points


def _spread_duplicates(answers: list[Stored], count: int) -> None:
    """Samples already stored (a re-sent batch): counted against the batches that sent them.

    One insert serves every batch, so the split is by order when several batches overlap.
    """
    for answer in answers:
        moved = min(count, answer.accepted)
        answer.accepted -= moved
        answer.duplicates += moved
        count -= moved
        if not count:
            return


def _mark_dirty(model: Any, since: datetime) -> None:
    """Late samples (an agent's buffer after an outage): roll their minutes up again."""
    from django.db.models import Q

    minute = since.replace(second=0, microsecond=0)
    model.objects.get_or_create(pk=1)
    model.objects.filter(pk=1).filter(
        Q(dirty_since__isnull=True) | Q(dirty_since__gt=minute)
    ).update(dirty_since=minute)


def series_for_points(points: Iterable[LivePoint]) -> set[int]:
    return {point.series_id for point in points}
