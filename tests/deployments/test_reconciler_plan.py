"""The rollout batch planner (deployments.rollouts.plan), simulated pass by pass.

Each simulated pass applies the plan, then lets every started replica become available:
the invariants must hold after every pass (live ≤ N + max_surge; available slots never
fall below N − max_unavailable once reached; one current replica per slot).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from deployments.choices import ReplicaState
from deployments.rollouts import LIVE, plan, policy

_ids = itertools.count(1)


@dataclass
class R:
    slot: int
    revision: int
    state: str = ReplicaState.AVAILABLE
    pk: int = 0

    def __post_init__(self) -> None:
        self.pk = next(_ids)


def roll(n: int, surge: int, unavailable: int, *, start_first_only: bool = False) -> list[dict]:
    replicas = [R(slot, 1) for slot in range(n)]
    history = []
    for _ in range(50):
        live = [r for r in replicas if r.state in LIVE]
        decided = plan(
            live,
            is_current=lambda r: r.revision == 2,
            replicas=n,
            max_surge=surge,
            max_unavailable=unavailable,
        )
        for r in decided.stop:
            r.state = ReplicaState.GONE
        for slot in decided.create:
            replicas.append(R(slot, 2, ReplicaState.STARTING))
        live = [r for r in replicas if r.state in LIVE]
        available = {r.slot for r in live if r.state == ReplicaState.AVAILABLE}
        history.append({"live": len(live), "available": len(available)})
        assert len(live) <= n + surge
        assert len(available) >= n - unavailable
        per_slot = [sum(1 for r in live if r.slot == s and r.revision == 2) for s in range(n)]
        assert max(per_slot) <= 1
        if (
            all(r.revision == 2 and r.state == ReplicaState.AVAILABLE for r in live)
            and len(live) == n
        ):
            return history
        for r in live:  # the started ones become available before the next pass
            if r.state == ReplicaState.STARTING:
                r.state = ReplicaState.AVAILABLE
    raise AssertionError(f"no convergence: {history}")


@pytest.mark.parametrize(
    ("n", "surge", "unavailable"), [(2, 1, 0), (4, 1, 0), (4, 2, 1), (3, 0, 1), (5, 3, 2)]
)
def test_batches_respect_surge_and_unavailable(n, surge, unavailable):
    history = roll(n, surge, unavailable)
    assert history[-1] == {"live": n, "available": n}


def test_start_first_with_zero_unavailable_adds_one_at_a_time():
    history = roll(3, 1, 0)
    # one new replica at a time (the old one of its slot goes as the next one starts)
    assert [h["live"] for h in history] == [4, 4, 4, 3]
    assert all(h["available"] == 3 for h in history)


def test_fresh_deployment_and_crash_replacement_and_scale_down():
    decided = plan([], is_current=lambda r: True, replicas=3, max_surge=1, max_unavailable=0)
    assert decided.create == [0, 1, 2] and not decided.stop
    live = [R(0, 1), R(2, 1)]  # slot 1 crashed (failed rows are not live)
    decided = plan(live, is_current=lambda r: True, replicas=3, max_surge=1, max_unavailable=0)
    assert decided.create == [1]
    live = [R(0, 1), R(1, 1), R(2, 1)]
    decided = plan(live, is_current=lambda r: True, replicas=1, max_surge=1, max_unavailable=0)
    assert sorted(r.slot for r in decided.stop) == [1, 2] and not decided.create


def test_duplicates_of_a_slot_are_stopped_keeping_the_most_advanced():
    keep, extra = R(0, 2), R(0, 2, ReplicaState.STARTING)
    decided = plan(
        [extra, keep], is_current=lambda r: True, replicas=1, max_surge=1, max_unavailable=0
    )
    assert decided.stop == [extra] and not decided.create


def test_policy_reads_the_strategy_and_refuses_a_frozen_combination():
    rules = policy(
        {"replicas": 4, "strategy": {"max_surge": 0, "max_unavailable": 0, "auto_revert": False}},
        2,
    )
    assert (rules.replicas, rules.max_surge, rules.max_unavailable) == (2, 1, 0)
    assert rules.auto_revert is False
    assert policy({"strategy": {"max_surge": "50%"}}, 4).max_surge == 2
