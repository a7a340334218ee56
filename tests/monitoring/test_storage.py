"""Storage: hourly partitions, idempotent inserts, 1-minute rollups (late data included),
retention by dropping partitions, and the plan of a 15-minute chart query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from monitoring import partitions, services
from monitoring.ingest import prepare, store
from monitoring.models import Rollup, RollupState, Sample, Series
from monitoring.queries import Selection, snapshot
from tests.monitoring.support import batch, deployment, joined_node, replica_on, round_, variant

pytestmark = pytest.mark.django_db(transaction=True)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def partition_names(table: partitions.PartitionedTable) -> list[str]:
    return [name for name, _ in partitions.existing(table)]


@pytest.fixture
def world(admin_user):
    node, _ = joined_node("store-a")
    chat = deployment(admin_user, "store-chat", variant())
    return node, chat, replica_on(node, chat)


def ingest(node, rounds, *, now=None):
    (answer,), _ = store([prepare(node.pk, batch(*rounds), now=now)])
    return answer


def test_samples_land_in_hourly_partitions_and_go_with_them(world):
    node, _, replica = world
    now = datetime.now(UTC)
    two_hours_ago = now - timedelta(hours=2)
    ingest(node, [round_(ms(two_hours_ago), replicas=[(replica.pk, {"requests_running": 1})])])
    ingest(node, [round_(ms(now), replicas=[(replica.pk, {"requests_running": 2})])])
    names = partition_names(partitions.SAMPLES)
    assert partitions.SAMPLES.name_for(partitions.SAMPLES.start_of(two_hours_ago)) in names
    assert partitions.SAMPLES.name_for(partitions.SAMPLES.start_of(now)) in names
    assert Sample.objects.filter(series__name="requests_running").count() == 2

    # 25 h later the raw retention (24 h) drops the partition of two hours ago, not the
    # latest one, and creates the hours ahead
    result = services.maintain_partitions(now + timedelta(hours=23))
    dropped = partitions.SAMPLES.name_for(partitions.SAMPLES.start_of(two_hours_ago))
    assert dropped in result.dropped
    assert partitions.SAMPLES.name_for(partitions.SAMPLES.start_of(now)) not in result.dropped
    kept = Sample.objects.filter(series__name="requests_running")
    assert list(kept.values_list("value", flat=True)) == [2.0]
    ahead = partitions.SAMPLES.name_for(partitions.SAMPLES.start_of(now + timedelta(hours=23 + 6)))
    assert ahead in partition_names(partitions.SAMPLES)


def test_rollups_cover_each_minute_and_take_late_samples_in(world):
    node, _, replica = world
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    minute = now.replace(second=0) - timedelta(minutes=3)
    rounds = [
        round_(ms(minute + timedelta(seconds=s)), replicas=[(replica.pk, {"cpu_percent": v})])
        for s, v in ((0, 10.0), (20, 30.0), (40, 20.0))
    ]
    ingest(node, rounds)
    result = services.roll_up(now)
    assert result.rows >= 1
    rollup = Rollup.objects.get(series__name="cpu_percent", series__replica_id=replica.pk)
    assert (rollup.minute, rollup.count, rollup.total, rollup.low, rollup.high) == (
        minute,
        3,
        60.0,
        10.0,
        30.0,
    )
    assert rollup.mean == 20.0

    # an agent back from an outage flushes a sample of 40 minutes ago: that minute is
    # marked and rolled up on the next run, though the watermark is past it
    late = now.replace(second=0) - timedelta(minutes=40)
    ingest(
        node,
        [round_(ms(late + timedelta(seconds=5)), replicas=[(replica.pk, {"cpu_percent": 70.0})])],
    )
    assert RollupState.objects.get(pk=1).dirty_since == late
    services.roll_up(now + timedelta(minutes=1))
    late_rollup = Rollup.objects.get(series__replica_id=replica.pk, minute=late)
    assert (late_rollup.count, late_rollup.total) == (1, 70.0)
    assert RollupState.objects.get(pk=1).dirty_since is None

    # the overview's long windows read rollups: 1-minute means
    series = Series.objects.get(replica_id=replica.pk, name="cpu_percent")
    long = snapshot(
        Selection(deployment_id=replica.deployment_id, names=("cpu_percent",)),
        since=now - timedelta(hours=12),
        until=now,
    )
    assert long["source"] == "rollup"
    (entry,) = [s for s in long["series"] if s["id"] == series.pk]
    assert entry["points"] == [[ms(late), 70.0], [ms(minute), 20.0]]


def test_rollups_past_retention_are_dropped(world):
    node, _, replica = world
    now = datetime.now(UTC)
    ingest(node, [round_(ms(now - timedelta(minutes=5)), replicas=[(replica.pk, {"restarts": 0})])])
    services.roll_up(now)
    assert Rollup.objects.exists()
    result = services.maintain_partitions(now + timedelta(days=31))
    assert partitions.ROLLUPS.name_for(partitions.ROLLUPS.start_of(now)) in result.dropped
    assert not Rollup.objects.exists()


def test_a_15_minute_chart_reads_one_series_through_the_primary_key(world):
    node, chat, replica = world
    now = datetime.now(UTC)
    # 3 hours of 20 replicas x 10 series every 5 s: ~430,000 samples
    start = now - timedelta(hours=3)
    names = [
        "requests_running",
        "requests_waiting",
        "prompt_tokens_per_s",
        "generated_tokens_per_s",
        "time_to_first_token_s",
        "time_per_token_s",
        "kv_cache_usage",
        "cpu_percent",
        "memory_bytes",
        "restarts",
    ]
    ids = [
        Series.objects.create(
            scope="replica", name=name, node=node, deployment=chat, replica_id=replica.pk + k
        ).pk
        for k in range(20)
        for name in names
    ]
    partitions.ensure(partitions.SAMPLES, [start + timedelta(hours=h) for h in range(5)])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO monitoring_sample (series_id, ts, value) "
            "SELECT s, %s::timestamptz + make_interval(secs => 5 * g), g "
            "FROM unnest(%s::bigint[]) s, generate_series(0, 2159) g",
            [start, ids],
        )
        cursor.execute("ANALYZE monitoring_sample")
        cursor.execute(
            "EXPLAIN SELECT ts, value FROM monitoring_sample WHERE series_id = %s "
            "AND ts >= %s AND ts <= %s ORDER BY ts",
            [ids[7], now - timedelta(minutes=15), now],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
    result = snapshot(
        Selection(deployment_id=chat.pk, names=("cpu_percent",)),
        since=now - timedelta(minutes=15),
        until=now,
    )
    assert result["source"] == "raw"
    assert len(result["series"]) == 20
    assert all(170 <= len(s["points"]) <= 181 for s in result["series"])
