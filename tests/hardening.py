"""pytest plugin: every fleet-managed container the suite starts follows the hardening policy.

A session-scoped autouse fixture subscribes to the Docker engine's ``start`` events of
containers labelled ``fleet.managed=true`` before the first test runs, inspects each one as
it starts (on a thread of its own) and collects :func:`hardening_violations` of the inspect
output. At the end of the session any violation fails the run: the fixture's teardown raises,
naming the container, its labels and what is wrong.

A test that starts a managed container WITHOUT the hardening on purpose (a fake orphan, a
container only listed by the inventory) labels it ``fleet.test-exempt=<reason>``; such
containers are skipped. A container gone before it could be inspected is recorded and
listed at the end (it cannot be judged). No Docker engine: the fixture fails, never skips.

The watcher sees the whole engine: a managed container that another test session on the
same engine starts is inspected too.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

LABEL_EXEMPT = "fleet.test-exempt"
EVENT_FILTERS = {"type": "container", "event": ["start"], "label": ["fleet.managed=true"]}
QUIET_S = 0.5  # at the end: how long no event may arrive before the watcher stops


@dataclass
class Finding:
    container_id: str
    name: str
    labels: dict[str, str]
    violations: list[str]

    def describe(self) -> str:
        lines = [f"container {self.name} ({self.container_id[:12]})", f"  labels: {self.labels}"]
        lines += [f"  - {violation}" for violation in self.violations]
        return "\n".join(lines)


@dataclass
class HardeningWatcher:
    """Reads start events from ``stream`` and inspects the containers through ``client``."""

    client: Any
    stream: Any
    inspected: int = 0
    exempt: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last_event: float = field(default_factory=time.monotonic)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = False
        self.started_at = time.time()
        self.thread = threading.Thread(target=self._run, name="hardening-watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                self.last_event = time.monotonic()
                try:
                    self.handle(event)
                except Exception as exc:  # an unexpected event must not stop the watch
                    self.errors.append(f"{type(exc).__name__}: {exc} (event {event!r})")
        except Exception as exc:
            if not self.closing:
                self.errors.append(f"the event stream broke: {type(exc).__name__}: {exc}")

    def handle(self, event: dict[str, Any]) -> None:
        from docker.errors import NotFound

        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        attributes = actor.get("Attributes") or {}
        name = str(attributes.get("name") or container_id[:12])
        if not container_id:
            return
        if attributes.get(LABEL_EXEMPT):
            with self.lock:
                self.exempt.append(f"{name}: {attributes[LABEL_EXEMPT]}")
            return
        try:
            attrs = self.client.api.inspect_container(container_id)
        except NotFound:
            with self.lock:
                self.gone.append(name)
            return
        self.check(attrs)

    def check(self, attrs: dict[str, Any]) -> None:
        from deployments.runtimes.policy import hardening_violations

        container_id = str(attrs.get("Id") or "")
        labels = dict((attrs.get("Config") or {}).get("Labels") or {})
        name = str(attrs.get("Name") or container_id[:12]).lstrip("/")
        with self.lock:
            # a restart (on-failure) starts the same container again: judged once
            if container_id in self.seen:
                return
            self.seen.add(container_id)
            if labels.get(LABEL_EXEMPT):
                self.exempt.append(f"{name}: {labels[LABEL_EXEMPT]}")
                return
            self.inspected += 1
        violations = hardening_violations(attrs)
        if violations:
            with self.lock:
                self.findings.append(Finding(container_id, name, labels, violations))

    def finish(self) -> None:
        """Inspect the managed containers still there, drain the events, stop watching."""
        from docker.errors import NotFound

        with contextlib.suppress(Exception):
            for summary in self.client.api.containers(filters={"label": "fleet.managed=true"}):
                if int(summary.get("Created") or 0) < self.started_at - 1:
                    continue  # older than this session
                with contextlib.suppress(NotFound):
                    self.check(self.client.api.inspect_container(summary["Id"]))
        deadline = time.monotonic() + 5
        while time.monotonic() - self.last_event < QUIET_S and time.monotonic() < deadline:
            time.sleep(0.05)
        self.closing = True
        with contextlib.suppress(Exception):
            self.stream.close()
        self.thread.join(timeout=5)

    def report(self) -> str:
        lines = [
            f"hardening watcher: {self.inspected} managed container(s) inspected, "
            f"{len(self.exempt)} exempt, {len(self.gone)} gone before inspection"
        ]
        if self.gone:
            lines.append("  gone before inspection (not judged): " + ", ".join(self.gone))
        lines += [f"  watcher error: {error}" for error in self.errors]
        return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def hardening_watcher() -> Iterator[HardeningWatcher]:
    """Watches every managed container the session starts; fails the session on a violation."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        # the subscription is live once this returns: no start after it is missed
        stream = client.events(decode=True, filters=EVENT_FILTERS)
    except DockerException as exc:
        pytest.fail(f"the hardening watcher needs a reachable Docker engine: {exc}", pytrace=False)
    inspector = docker.from_env(timeout=30)
    watcher = HardeningWatcher(inspector, stream)
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.finish()
        inspector.close()
        client.close()
    print("\n" + watcher.report(), file=sys.stderr)
    if watcher.findings:
        details = "\n".join(finding.describe() for finding in watcher.findings)
        pytest.fail(
            f"{len(watcher.findings)} fleet-managed container(s) started during this session "
            f"break the hardening policy (deployments/runtimes/policy.py):\n{details}",
            pytrace=False,
        )
