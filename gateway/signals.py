"""What the gateways tell deployments (registered in deployments.traffic at start-up).

Every gateway process publishes its live summary to Redis each second
(``gateway.runtime``): per deployment the mean concurrency over that second (requests in
flight plus those the activator holds) and whether any request came; per replica the
requests it has outstanding; and when it last loaded its routing table. From these:

- the autoscaler's ``concurrency`` signal: the sum over fresh gateway processes;
- the drain check: a replica that stopped being routable at T is still busy while a
  gateway has not loaded a table since T, or has requests outstanding on it;
- routing changes: published to every gateway (``gateway.invalidation``), so a new
  replica is routable within milliseconds instead of the next periodic refresh.
"""

from __future__ import annotations

import logging
from typing import Any

from deployments import traffic
from deployments.autoscaling import Metric
from gateway import invalidation, live
from gateway.runtime import LIVE_PUBLISH_S

log = logging.getLogger(__name__)

FRESH_S = 3 * LIVE_PUBLISH_S  # a summary older than this is a gateway that went away


def _summaries() -> list[dict[str, Any]]:
    """Fresh summaries of every gateway process; Redis unreadable raises (the readers in
    deployments.traffic then hold the counts, and drains wait)."""
    found, problem = live.summaries(FRESH_S)
    if problem:
        raise RuntimeError(problem)
    return found


def concurrency(deployment_ids: list[int]) -> dict[int, traffic.Reading]:
    from deployments.models import Deployment

    names = dict(Deployment.objects.filter(pk__in=deployment_ids).values_list("name", "pk"))
    summaries = _summaries()
    if not summaries:
        return {}  # no gateway publishing: no signal (the autoscaler holds its counts)
    totals: dict[int, list[float]] = {pk: [0.0, 0.0, 0.0] for pk in names.values()}
    for summary in summaries:
        for name, figures in (summary.get("autoscale") or {}).items():
            pk = names.get(name)
            if pk is None:
                continue
            totals[pk][0] += float(figures.get("concurrency") or 0)
            totals[pk][1] += float(figures.get("window_requests") or 0)
            totals[pk][2] += float(figures.get("held") or 0)
    return {
        pk: traffic.Reading(value, active=requests > 0 or value > 0, held=int(held))
        for pk, (value, requests, held) in totals.items()
    }


def busy_replicas(since: dict[int, float]) -> set[int]:
    busy: set[int] = set()
    for summary in _summaries():
        outstanding = summary.get("outstanding") or {}
        table_at = float(summary.get("table_at") or 0)
        for replica_id, stopped_at in since.items():
            if table_at < stopped_at or int(outstanding.get(str(replica_id), 0)) > 0:
                busy.add(replica_id)
    return busy


def _announce(reason: str) -> None:
    invalidation.publish(reason)


def connect() -> None:
    traffic.register_signal(Metric.CONCURRENCY, concurrency)
    traffic.register_drain(busy_replicas)
    traffic.on_routing_change(_announce)
