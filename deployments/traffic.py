"""What the traffic layer (the gateway, monitoring) tells deployments, through seams.

Deployments sit below the gateway and monitoring, so they cannot import them; those apps
register here in their ``AppConfig.ready()`` instead (a process that never loaded them has
nothing registered, and every reader copes with that):

- **signals**: per autoscaling metric, a reader of what each deployment carries now (the
  gateway's requests in flight, monitoring's runtime and container series);
- **drain**: which replicas a gateway may still send requests to, or has requests on, so a
  scale-down stops a replica's container only once it has none;
- **routing changes**: a replica became routable or stopped being so; gateways reload
  their routing table at once instead of on their next periodic refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """One deployment's figure now: ``value`` summed over its replicas (None: no data),
    whether it saw any request (``active``), and requests held at zero (``held``)."""

    value: float | None
    active: bool = False
    held: int = 0


SignalReader = Callable[[list[int]], dict[int, Reading]]
DrainReader = Callable[[dict[int, float]], set[int]]

_signals: dict[str, SignalReader] = {}
_drain: list[DrainReader] = []
_routing: list[Callable[[str], None]] = []


def register_signal(metric: str, reader: SignalReader) -> None:
    _signals[metric] = reader


def read_signal(metric: str, deployment_ids: list[int]) -> dict[int, Reading]:
    """``{deployment id: Reading}``; deployments the reader knows nothing of are absent."""
    reader = _signals.get(metric)
    if reader is None or not deployment_ids:
        return {}
    try:
        return reader(deployment_ids)
    except Exception:
        log.exception("reading the %s signal failed; the autoscaler holds its counts", metric)
        return {}


def register_drain(reader: DrainReader) -> None:
    if reader not in _drain:
        _drain.append(reader)


def still_busy(since: dict[int, float]) -> set[int]:
    """Of ``{replica id: epoch seconds it stopped being routable}``, those a gateway may
    still route to or has requests on (unreadable: all of them, until the drain deadline)."""
    busy: set[int] = set()
    for reader in _drain:
        try:
            busy |= reader(since)
        except Exception:
            log.exception("reading the gateways' drain state failed")
            return set(since)
    return busy


def on_routing_change(listener: Callable[[str], None]) -> None:
    if listener not in _routing:
        _routing.append(listener)


def routing_changed(reason: str) -> None:
    """On commit: tell the listeners (gateways) that routable replicas changed."""
    if _routing:
        transaction.on_commit(lambda: _tell(reason))


def _tell(reason: str) -> None:
    for listener in list(_routing):
        try:
            listener(reason)
        except Exception:
            log.exception("a routing-change listener failed")
