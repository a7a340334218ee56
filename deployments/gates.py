"""Rollout gates: measure the new revision against the stable one before the rollout goes on.

A revision's ``strategy.gates`` (checked in ``deployments.spec``) names a benchmark profile
and/or test suites and the thresholds to compare with. Deployments sit below the benchmarks
app, so the benchmarks app registers the runner here in its ``AppConfig.ready()``; a process
without it has no runner, and a gated rollout then fails with a reason that says so instead
of shipping unmeasured.

The rollout engine (``deployments.rollout_states``) calls the runner from its passes:

- :meth:`GateRunner.start` once the first replica of the new revision is available (the
  old replicas are held meanwhile, so the stable revision is measured in the same run);
- :meth:`GateRunner.verdict` on every later pass until it answers. Its answer (figures,
  comparisons, ``passed``) is stored on ``Rollout.gate`` and in the history event.
"""

from __future__ import annotations

from typing import Any, Protocol

# Rollout.gate["state"]
GATE_RUNNING = "running"
GATE_PASSED = "passed"
GATE_FAILED = "failed"


class GateRunner(Protocol):
    def unknown(self, gates: dict[str, Any]) -> dict[str, str]:
        """Field → message for the profile and suite names that do not exist."""
        ...

    def start(self, rollout: Any, gates: dict[str, Any], new: Any, stable: Any | None) -> dict:
        """Start the gate's runs on replica ``new`` (and ``stable``); the gate record."""
        ...

    def verdict(self, rollout: Any, gates: dict[str, Any]) -> dict | None:
        """The finished gate record (``state`` passed or failed), None while it runs."""
        ...

    def cancel(self, rollout: Any) -> None:
        """Stop the gate's runs (the rollout ended another way)."""
        ...


_runner: list[GateRunner] = []


def register(runner: GateRunner) -> None:
    _runner[:] = [runner]


def runner() -> GateRunner | None:
    return _runner[0] if _runner else None


def of_spec(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The gates of a revision's spec, None when it has none."""
    strategy = spec.get("strategy")
    gates = strategy.get("gates") if isinstance(strategy, dict) else None
    if not isinstance(gates, dict) or not (gates.get("benchmark") or gates.get("suites")):
        return None
    return gates
