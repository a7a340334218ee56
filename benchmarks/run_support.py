"""What the benchmark and test-suite jobs share: progress and cancel, the temporary gateway
key, the targets' health, the generator's CPU meter and the thread the load runs on.

A deployment target gets a temporary gateway key, limited to that deployment and revoked
when the run ends, whatever the end; the run waits until the gateway accepts it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psutil
from django.utils import timezone

from benchmarks import loadgen
from benchmarks.models import BenchmarkRun, SuiteRun, TargetKind
from core import job_services
from core.history import ChangeContext
from deployments.choices import ReplicaState
from deployments.models import Replica
from fleet.choices import NodeState
from gateway import services as gateway_services

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5
# a level whose requests failed this much ends the run (the target is broken, not slow)
FAILED_SHARE_LIMIT = 0.5
GATEWAY_WAIT_S = 10.0


class Stop(Exception):
    """End the run now: ``outcome`` failed or cancelled, ``message`` why."""

    def __init__(self, outcome: str, message: str = "") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class LeaseLost(Exception):
    pass


def worker_id() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


class CpuMeter:
    """This process's CPU use between two readings (100 % = one core busy)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.reset()
        self.peak = 0.0

    def _now(self) -> tuple[float, float]:
        times = self.process.cpu_times()
        return time.monotonic(), times.user + times.system

    def reset(self) -> None:
        self.start = self.last = self._now()

    def tick(self) -> None:
        now = self._now()
        wall = now[0] - self.last[0]
        if wall >= 0.2:
            self.peak = max(self.peak, 100.0 * (now[1] - self.last[1]) / wall)
            self.last = now

    def mean(self) -> float:
        now = self._now()
        wall = max(1e-9, now[0] - self.start[0])
        return round(100.0 * (now[1] - self.start[1]) / wall, 1)


@contextmanager
def gateway_key(run: BenchmarkRun | SuiteRun, seconds: float) -> Iterator[str]:
    """A key for this run's deployment only, expiring after the run's longest possible time."""
    if run.target_kind != TargetKind.DEPLOYMENT:
        yield ""
        return
    ctx = ChangeContext.system("benchmarks", reason=f"temporary key of job {run.job_id}")
    key, secret = gateway_services.create_key(
        ctx,
        name=f"benchmark job {run.job_id}",
        description="Temporary key of a benchmark or test-suite run; revoked when it ends.",
        all_models=False,
        allowed_models=[run.deployment_name],
        expires_at=timezone.now() + timedelta(seconds=seconds + 300),
    )
    try:
        _wait_for_gateway(run, secret)
        yield secret
    finally:
        try:
            gateway_services.revoke_key(ctx, key)
        except Exception:  # the key expires by itself
            log.warning("could not revoke the temporary key of job %s", run.job_id, exc_info=True)


def _wait_for_gateway(run: BenchmarkRun | SuiteRun, secret: str) -> None:
    """Until the gateway knows the new key (it learns keys over pub/sub, within a moment)."""
    url = f"{run.targets[0]['url'].rstrip('/')}/models/{run.deployment_name}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})  # noqa: S310
    deadline = time.monotonic() + GATEWAY_WAIT_S
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (our gateway)  # nosec B310
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise Stop(
        "failed",
        f"The gateway at {url} did not accept the run's temporary key within "
        f"{GATEWAY_WAIT_S:g} s ({last}). Check that FLEET_GATEWAY_URL points at this "
        "install's gateway and that it is up.",
    )


def check_targets(run: BenchmarkRun | SuiteRun) -> None:
    """A replica target that is no longer available, or whose node's agent stopped reporting,
    ends the run, with the reason."""
    ids = [t["replica"] for t in run.targets if t.get("replica")]
    if not ids:
        return
    rows = list(Replica.objects.filter(pk__in=ids).select_related("node"))
    for replica in rows:
        if replica.state != ReplicaState.AVAILABLE:
            why = f": {replica.reason}" if replica.reason else ""
            raise Stop(
                "failed",
                f"Replica {replica.pk} on {replica.node or 'no node'} became {replica.state}"
                f"{why}. Finished levels are kept; run it again once the "
                "deployment is ready.",
            )
        if replica.node is not None and replica.node.get_status() == NodeState.UNREACHABLE:
            raise Stop(
                "failed",
                f"The agent of node {replica.node} (replica {replica.pk}) stopped reporting: "
                "the node is unreachable, so the replica may be moved and its usage is no "
                "longer recorded. Finished levels are kept; check the agent and run it again.",
            )
    missing = set(ids) - {r.pk for r in rows}
    if missing:
        raise Stop("failed", f"Replica {sorted(missing)[0]} was removed during the run.")


class Progress:
    def __init__(self, job_id: int, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.last = 0.0
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        self.lines.append(line)

    def send(self, progress: dict[str, Any], *, force: bool = False) -> bool:
        """Report (at most every PROGRESS_INTERVAL_S unless forced); True when it did."""
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL_S:
            return False
        self.last = now
        text, self.lines = "\n".join(self.lines), []
        answer = job_services.report_progress(self.job_id, self.owner, progress, log_text=text)
        if not answer.keep_going:
            raise LeaseLost()
        if answer.cancel_requested:
            raise Stop("cancelled", "")
        return True


def in_thread(
    work: Callable[[threading.Event], Any], watch: Callable[[], None], stop: threading.Event
) -> Any:
    """Run ``work`` on a thread, calling ``watch`` (progress, checks) until it ends."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = work(stop)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=body, name="benchmark-load", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            watch()
    except BaseException:
        stop.set()
        thread.join(60)
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def failing(
    failed: list[loadgen.Sample], requests: int, level: loadgen.Level, t: dict[str, Any]
) -> str:
    kinds: dict[str, int] = {}
    for sample in failed:
        kinds[sample.error] = kinds.get(sample.error, 0) + 1
    listed = ", ".join(f"{k} ×{n}" for k, n in kinds.items())
    return (
        f"{len(failed)} of {requests} requests failed at {level.label} on {t['label']} "
        f"({listed}; e.g. {failed[0].detail[:200]!r}). Check the target's logs and state."
    )


def target_of(t: dict[str, Any], secret: str) -> loadgen.Target:
    return loadgen.Target(t["url"], t.get("model") or "", secret, t["label"])
