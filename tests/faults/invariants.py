"""The one checker of the fault suite: what the control plane promises under any fault.

A fault test drives a deployment through the real API (:class:`Ledger` keeps every write
that was acknowledged), samples Docker and the replica rows every 100 ms while the fault
happens (:class:`BoundsWatch`), and at the end calls :func:`violations`, which returns what
broke, in words (an empty list when every promise held):

1. No acknowledged write is lost: each 2xx write is in history under its request id, and
   the last one's change is in the final spec.
2. Convergence or an explicit failure: within the deadline the deployment runs its desired
   replicas of its current revision, all available, or it is failed or paused with a reason
   (a rollout that failed names why).
3. Replica bounds at every sample: never more running containers of the deployment than
   desired + max_surge (containers on a node the control plane marks unreachable cannot be
   removed until it returns, and those left there by the outage are removed by the node sweep
   once it is back; they are counted apart, and they count against max_surge in the rollout
   engine, so no new surge starts while they run), and once it had converged never fewer
   available replicas with a running container (or a container still running on an
   unreachable node) than desired - max_unavailable; a fault that takes replicas away (a node
   lost, a container killed) allows that many fewer, which its test names.
4. No orphans and no duplicates: every managed container of the deployment belongs to a live
   replica row, no slot runs two containers of one revision, no live slot has two rows, no
   history event is recorded twice for the same request.
5. History is gap-free and consistent: every revision has exactly one event that made it, and
   the last revision change in history is the deployment's current revision.

docs/reliability.md says the same in a user's words, with the fault that proves each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.db import connection

from core.models import HistoryEvent
from deployments.choices import DeploymentState, ReplicaState, RolloutState
from deployments.models import Deployment, DeploymentRevision, Replica, Rollout
from deployments.reconcile_pass import RESCHEDULED
from deployments.rollouts import LIVE
from fleet.choices import NodeState
from fleet.models import Node

SAMPLE_EVERY_S = 0.1
ORPHAN_SETTLE_S = 10.0
LABELS = ("fleet.managed=true",)


# --- 1. acknowledged writes -----------------------------------------------------------------
@dataclass
class Write:
    method: str
    path: str
    body: dict[str, Any] | None
    request_id: str
    status: int
    answer: Any


@dataclass
class Ledger:
    """Writes through the real API with a request id each; the acknowledged ones are kept."""

    base_url: str
    token: str
    writes: list[Write] = field(default_factory=list)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **headers: str):
        request_id = f"fault-{uuid.uuid4().hex[:16]}"
        answer = requests.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.token}",
                "X-Request-ID": request_id,
                **headers,
            },
            timeout=60,
        )
        if 200 <= answer.status_code < 300:
            self.writes.append(
                Write(method, path, body, request_id, answer.status_code, answer.json())
            )
        return answer

    @property
    def acknowledged(self) -> int:
        return len(self.writes)

    def lost(self) -> list[str]:
        """Acknowledged writes that history does not have (under their request id)."""
        seen = set(
            HistoryEvent.objects.filter(
                request_id__in=[w.request_id for w in self.writes]
            ).values_list("request_id", flat=True)
        )
        return [
            f"{w.method} {w.path} (request {w.request_id}, answered {w.status}) is not in history"
            for w in self.writes
            if w.request_id not in seen
        ]


# --- 3. bounds, sampled -----------------------------------------------------------------------
@dataclass
class Sample:
    at: float
    running: dict[str, list[str]]  # "r<revision>-s<slot>" -> running containers (reachable nodes)
    on_unreachable: int  # on an unreachable node, or left there by its outage and not yet removed
    available_running: int


class BoundsWatch(threading.Thread):
    """Samples ``docker ps`` (every node here shares this engine) and the replica rows."""

    def __init__(self, client: Any, deployment: Deployment) -> None:
        super().__init__(name=f"bounds-{deployment.name}", daemon=True)
        self.client = client
        self.deployment = deployment
        self.stopping = threading.Event()
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.converged_at: float | None = None

    def sample(self) -> Sample:
        unreachable = {
            str(pk)
            for pk in Node.objects.filter(state=NodeState.UNREACHABLE).values_list("pk", flat=True)
        }
        containers = self.client.api.containers(
            filters={"label": [*LABELS, f"fleet.deployment={self.deployment.name}"]}
        )
        running: dict[str, list[str]] = {}
        names: set[str] = set()
        on_unreachable = 0
        rescheduled = set(
            Replica.objects.filter(
                deployment_id=self.deployment.pk,
                state=ReplicaState.GONE,
                reason__contains=RESCHEDULED,
            ).values_list("container_name", flat=True)
        )
        for summary in containers:  # without all=True: the running ones
            labels = summary.get("Labels") or {}
            name = (summary.get("Names") or ["?"])[0].lstrip("/")
            if labels.get("fleet.node") in unreachable or name in rescheduled:
                # cannot be removed before its node is back; then the sweep removes it
                on_unreachable += 1
                continue
            names.add(name)
            key = f"r{labels.get('fleet.revision', '?')}-s{labels.get('fleet.slot', '?')}"
            running.setdefault(key, []).append(name)
        available = Replica.objects.filter(
            deployment_id=self.deployment.pk, state=ReplicaState.AVAILABLE
        ).values_list("container_name", flat=True)
        return Sample(
            at=time.monotonic(),
            running=running,
            on_unreachable=on_unreachable,
            available_running=sum(1 for name in available if name in names),
        )

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.samples.append(self.sample())
                except Exception as exc:  # a sample lost to the fault itself
                    self.errors.append(repr(exc))
                self.stopping.wait(SAMPLE_EVERY_S)
        finally:
            connection.close()

    def mark_converged(self) -> None:
        """From now on the lower bound applies (the test calls it once the fleet settled)."""
        self.converged_at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def over_upper_bound(self, desired: Callable[[float], int], surge: int) -> list[str]:
        found = []
        for s in self.samples:
            total = sum(len(names) for names in s.running.values())
            if total > desired(s.at) + surge:
                found.append(f"{total} running > {desired(s.at)} + {surge}: {s.running}")
        return found

    def under_lower_bound(self, desired: Callable[[float], int], unavailable: int) -> list[str]:
        if self.converged_at is None:
            return []
        # containers left running on a node that went unreachable still answer: they count
        return [
            f"{s.available_running} available (+{s.on_unreachable} on unreachable nodes) "
            f"< {desired(s.at)} - {unavailable}"
            for s in self.samples
            if s.at >= self.converged_at
            and s.available_running + s.on_unreachable < desired(s.at) - unavailable
        ]

    def doubled_slots(self) -> list[str]:
        """A slot started twice: two running containers of one revision for one slot (a new
        revision's replica beside the old one's is the surge a rollout is allowed)."""
        return [
            f"{key} runs {names}"
            for s in self.samples
            for key, names in s.running.items()
            if len(names) > 1
        ]


# --- 2. convergence or an explicit failure --------------------------------------------------
def outcome(deployment: Deployment) -> str:
    """'converged', 'failed: <reason>', or '' while neither."""
    deployment.refresh_from_db()
    rows = list(Replica.objects.filter(deployment=deployment, state__in=LIVE))
    if (
        deployment.stable_revision_id == deployment.current_revision_id
        and len(rows) == deployment.desired_replicas
        and all(
            r.state == ReplicaState.AVAILABLE and r.revision_id == deployment.current_revision_id
            for r in rows
        )
        and not Rollout.objects.filter(deployment=deployment, state=RolloutState.RUNNING).exists()
        and not Replica.objects.filter(deployment=deployment, state=ReplicaState.STOPPING).exists()
    ):
        return "converged"
    if deployment.state == DeploymentState.PAUSED:
        reason = deployment.paused_reason
        return f"paused: {reason}" if reason else "paused without a reason"
    return ""


def failed_rollouts(deployment: Deployment) -> list[str]:
    """The reasons of the deployment's failed rollouts (an auto-revert leaves one)."""
    return list(
        Rollout.objects.filter(deployment=deployment, state=RolloutState.FAILED).values_list(
            "failure_reason", flat=True
        )
    )


def wait_outcome(deployment: Deployment, deadline_s: float, why: Callable[[], str]) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = outcome(deployment)
        if found:
            return found
        time.sleep(0.2)
    return f"neither converged nor failed in {deadline_s:.0f} s\n{why()}"


# --- 4 and 5: rows, containers and history at the end ----------------------------------------
def orphans(client: Any, deployment: Deployment) -> list[str]:
    live = dict(
        Replica.objects.filter(deployment=deployment, state__in=LIVE).values_list(
            "container_name", "slot"
        )
    )
    found = []
    for container in client.containers.list(
        all=True, filters={"label": [*LABELS, f"fleet.deployment={deployment.name}"]}
    ):
        if container.name not in live:
            found.append(f"container {container.name} ({container.status}) has no live replica")
    slots = Counter(live.values())
    found += [f"slot {slot} has {n} live replica rows" for slot, n in slots.items() if n > 1]
    return found


def duplicate_events(deployment: Deployment) -> list[str]:
    keys = Counter(
        HistoryEvent.objects.filter(
            target_type="deployments.deployment", target_id=str(deployment.pk)
        )
        .exclude(request_id="")
        .values_list("request_id", "verb")
    )
    return [
        f"{verb} recorded {n} times for request {rid}" for (rid, verb), n in keys.items() if n > 1
    ]


def history_gaps(deployment: Deployment) -> list[str]:
    events = list(
        HistoryEvent.objects.filter(
            target_type="deployments.deployment", target_id=str(deployment.pk)
        ).order_by("occurred_at", "pk")
    )
    made = Counter(
        (e.changes.get("revision") or {}).get("after")
        for e in events
        if e.verb in ("created", "updated", "rolled_back")
        and isinstance(e.changes.get("revision"), dict)
    )
    found = []
    for number in DeploymentRevision.objects.filter(deployment=deployment).values_list(
        "number", flat=True
    ):
        if made[number] != 1:
            found.append(f"revision {number} has {made[number]} events that made it")
    # where the deployment points: a new revision ("revision") or an auto-revert moving back
    # to the stable one ("current_revision")
    changes = [
        change["after"]
        for e in events
        for key in ("revision", "current_revision")
        if isinstance(change := e.changes.get(key), dict) and "after" in change
    ]
    deployment.refresh_from_db()
    current = deployment.current_revision.number if deployment.current_revision else None
    if changes and changes[-1] != current:
        found.append(
            f"history's last revision change is r{changes[-1]}, the deployment runs r{current}"
        )
    return found


def violations(
    *,
    ledger: Ledger,
    watch: BoundsWatch,
    deployment: Deployment,
    client: Any,
    result: str,
    surge: int,
    unavailable: int,
    desired: Callable[[float], int],
    expect: str = "converged",
) -> list[str]:
    """Every broken promise, in words; ``result`` is what :func:`wait_outcome` returned."""
    found = [f"1: {line}" for line in ledger.lost()]
    if result != expect and not (expect == "paused" and result.startswith("paused: ")):
        found.append(f"2: expected {expect}, got {result}")
    found += [f"3: {line}" for line in watch.over_upper_bound(desired, surge)[:5]]
    found += [f"3: {line}" for line in watch.under_lower_bound(desired, unavailable)[:5]]
    found += [f"4: {line}" for line in watch.doubled_slots()[:5]]
    if result == "converged":
        # what was ordered stopped during the pass that converged may take a moment to go
        left = orphans(client, deployment)
        settle_by = time.monotonic() + ORPHAN_SETTLE_S
        while left and time.monotonic() < settle_by:
            time.sleep(0.2)
            left = orphans(client, deployment)
        found += [f"4: {line} {ORPHAN_SETTLE_S:g} s after converging" for line in left]
        last = watch.samples[-1] if watch.samples else None
        if last is not None and last.available_running != desired(last.at):
            found.append(
                f"2: converged, but {last.available_running} of {desired(last.at)} available "
                "replicas have a running container"
            )
    found += [f"4: {line}" for line in duplicate_events(deployment)]
    found += [f"5: {line}" for line in history_gaps(deployment)]
    if not watch.samples:
        found.append("3: the bounds watch took no sample")
    return found
