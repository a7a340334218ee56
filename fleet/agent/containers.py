"""Replica containers on this node: start (idempotent), wait for health, stop, logs.

No Django here: the control plane sends a container spec (``deployments.runtimes.base.
ContainerSpec.to_json()``) and the agent runs it with the Docker SDK through its
:class:`~fleet.agent.docker_driver.DockerDriver`.

Idempotence: a replica's container has a fixed name and carries the hash of its spec in
the ``fleet.spec-hash`` label. Starting a replica whose container already runs with the
same hash keeps it (a re-sent command only waits for health again); a container of that
name with another hash, or one that is not running, is replaced.

Health waits are short per call (``wait_s``): the agent's Celery worker runs one task at a
time, so a replica that takes long to load must not block the node's other commands. When
the wait ends before the replica is healthy the task reports ``starting`` and returns; the
control plane sends the start again (it finds the container running and waits again) until
the replica's healthy deadline, which only the control plane judges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from fleet.agent.docker_driver import DockerDriver, translated_errors
from fleet.agent.errors import AdapterError, DockerError

log = logging.getLogger("fleet.agent")

LABEL_SPEC_HASH = "fleet.spec-hash"
LABEL_REPLICA = "fleet.replica"
MODEL_SOURCE = "model"
POLL_INTERVAL_S = 0.05
HEALTH_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 10
RESTART_RETRIES = 3
LOG_TAIL_LINES = 20
MAX_ERROR_CHARS = 2000


@dataclass
class StartOutcome:
    """What the agent reports after a start: ``healthy``, ``starting`` (wait ran out) or
    ``failed`` (with the reason and the container's last log lines)."""

    state: str
    container_id: str = ""
    error: str = ""
    restarts: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "container_id": self.container_id,
            "error": self.error[:MAX_ERROR_CHARS],
            "restarts": self.restarts,
        }


def spec_hash(spec: dict[str, Any]) -> str:
    """A stable digest of the spec (key order does not matter)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def snapshot_dir(data_dir: Path, repo_id: str, commit: str) -> Path:
    """The variant's snapshot folder in the agent's hub cache."""
    return data_dir / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


def _mounts(spec: dict[str, Any], model_dir: Path | None) -> list[Mount]:
    """Bind mounts; the symbolic source ``model`` is the variant's snapshot (read-only).

    A hub-cache snapshot holds relative symlinks into ``../../blobs``, which would dangle in
    a mount of the snapshot folder alone: each file is mounted instead, from the blob it
    points to, at ``<target>/<path>``, read-only. Nothing else of the cache is visible.
    """
    mounts: list[Mount] = []
    for entry in spec.get("mounts") or []:
        source, target = str(entry.get("source", "")), str(entry["target"]).rstrip("/")
        if source == MODEL_SOURCE:
            if model_dir is None or not model_dir.is_dir():
                raise AdapterError(
                    f"the variant's files are not on this node ({model_dir}); download them first",
                    retryable=False,
                )
            for path in sorted(model_dir.rglob("*")):
                if path.is_dir():
                    continue
                relative = path.relative_to(model_dir).as_posix()
                mounts.append(
                    Mount(f"{target}/{relative}", str(path.resolve()), type="bind", read_only=True)
                )
        else:
            read_only = bool(entry.get("read_only", True))
            mounts.append(Mount(target, source, type="bind", read_only=read_only))
    return mounts


def run_arguments(
    spec: dict[str, Any], model_dir: Path | None, *, digest: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``containers.run``: the spec, hardened (shared with the bench)."""
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    labels[LABEL_SPEC_HASH] = digest or spec_hash(spec)
    kwargs: dict[str, Any] = {
        "image": spec["image"],
        "name": spec["name"],
        "command": list(spec.get("command") or []),
        "environment": dict(spec.get("environment") or {}),
        "labels": labels,
        "mounts": _mounts(spec, model_dir),
        "network_mode": spec.get("network_mode") or "host",
        "cap_drop": ["ALL"],
        "cap_add": list(spec.get("cap_add") or []) or None,
        "security_opt": ["no-new-privileges:true"],
        "read_only": bool(spec.get("read_only_rootfs", True)),
        "tmpfs": dict(spec.get("tmpfs") or {}),
        "pids_limit": int(spec.get("pids_limit") or 512),
        "init": True,
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": RESTART_RETRIES},
        "detach": True,
    }
    if spec.get("entrypoint") is not None:
        kwargs["entrypoint"] = list(spec["entrypoint"])
    if kwargs["network_mode"] != "host" and spec.get("ports"):
        kwargs["ports"] = {
            key: (spec.get("bind_address") or "127.0.0.1", int(port))
            for key, port in spec["ports"].items()
        }
    if spec.get("user"):
        kwargs["user"] = spec["user"]
    if spec.get("mem_limit"):
        kwargs["mem_limit"] = int(spec["mem_limit"])
    if spec.get("nano_cpus"):
        kwargs["nano_cpus"] = int(spec["nano_cpus"])
    if spec.get("shm_size"):
        kwargs["shm_size"] = int(spec["shm_size"])
    if int(spec.get("gpus") or 0) > 0:
        kwargs["device_requests"] = [
            DeviceRequest(driver="nvidia", count=int(spec["gpus"]), capabilities=[["gpu"]])
        ]
    return kwargs


def health_url(spec: dict[str, Any], port: int) -> str:
    probe_port = int(spec.get("health_port") or 0) or port
    return f"http://127.0.0.1:{probe_port}{spec.get('health_path') or '/health'}"


def wait_healthy(
    url: str,
    deadline: float,
    *,
    session: requests.Session,
    check: Any = None,
) -> str | None:
    """Poll ``url`` every 50 ms until it answers 2xx (None) or the deadline ("timeout").

    ``check`` (optional) is called between polls and returns an error text to stop early.
    """
    while True:
        try:
            answer = session.get(url, timeout=HEALTH_TIMEOUT_S)
            if 200 <= answer.status_code < 300:
                return None
        except requests.RequestException:
            pass
        if check is not None:
            problem = check()
            if problem:
                return str(problem)
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(POLL_INTERVAL_S)


def _logs(container: Any, tail: int = LOG_TAIL_LINES) -> str:
    try:
        raw = container.logs(tail=tail, stdout=True, stderr=True)
    except Exception:
        return ""
    return bytes(raw).decode("utf-8", errors="replace").strip()


def _raise_if_image_missing(client: Any, image: str, exc: APIError) -> None:
    """A start that failed because the image is not on this node and could not be pulled
    (``containers.run`` pulls a missing image): say so, with what to do."""
    if not image:
        return
    try:
        client.images.get(image)
    except ImageNotFound:
        raise DockerError(
            f"the image {image} is not on this node and pulling it failed "
            f"({exc.explanation or exc}); load it on the node (docker load, or docker pull "
            "from a registry it can reach), or give the revision an image the node has",
            retryable=False,
        ) from exc
    except APIError:
        return


def _find(client: Any, name: str) -> Any | None:
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def start_replica(
    spec: dict[str, Any],
    model_dir: Path | None,
    *,
    port: int,
    wait_s: float,
    driver: DockerDriver,
) -> StartOutcome:
    """Run the replica's container (or keep the one already running), then wait for health."""
    started = time.monotonic()
    deadline = started + max(0.0, wait_s)
    digest = spec_hash(spec)
    client = driver.sdk()
    timings: dict[str, float] = {}
    try:
        with translated_errors("start the replica's container"):
            arguments = run_arguments(spec, model_dir, digest=digest)
            # The usual case, a new container, costs what a plain ``docker run`` costs: no
            # look-up first. A container of that name already there (a re-sent start)
            # answers 409 at create, and only then is it inspected (kept or replaced).
            try:
                container = client.containers.run(**arguments)
            except APIError as exc:
                if exc.status_code != 409:
                    _raise_if_image_missing(client, str(arguments.get("image") or ""), exc)
                    raise
                container = _find(client, spec["name"])
                if container is not None:
                    same = (container.labels or {}).get(LABEL_SPEC_HASH) == digest
                    if not (same and container.status == "running"):
                        container.remove(force=True)
                        container = None
                if container is None:
                    container = client.containers.run(**arguments)
            timings["run_ms"] = round((time.monotonic() - started) * 1000, 1)
    except AdapterError as exc:
        return StartOutcome("failed", error=exc.message, timings=timings)

    state: dict[str, Any] = {"polls": 0}

    def crashed() -> str | None:
        state["polls"] += 1
        if state["polls"] % 4:  # inspect every ~200 ms; the health poll runs every 50 ms
            return None
        try:
            container.reload()
        except NotFound:
            return "the container disappeared while starting"
        except Exception:
            return None
        restarts = int(container.attrs.get("RestartCount") or 0)
        status = container.status
        if status in ("exited", "dead") or restarts > 0 or status == "restarting":
            code = (container.attrs.get("State") or {}).get("ExitCode")
            return f"the container exited (code {code}) while starting"
        return None

    with requests.Session() as session:
        problem = wait_healthy(health_url(spec, port), deadline, session=session, check=crashed)
    timings["healthy_ms"] = round((time.monotonic() - started) * 1000, 1)
    container_id = str(container.id)[:12]
    if problem is None and not spec.get("post_start"):
        # healthy: report at once, with the restart count of the last inspect (run, then
        # every ~200 ms while waiting); no extra engine call before the report
        restarts = int((container.attrs or {}).get("RestartCount") or 0)
        return StartOutcome("healthy", container_id, restarts=restarts, timings=timings)
    restarts = _restart_count(container)
    if problem == "timeout":
        return StartOutcome("starting", container_id, restarts=restarts, timings=timings)
    if problem:
        tail = _logs(container)
        return StartOutcome(
            "failed",
            container_id,
            error=f"{problem}; last log lines:\n{tail}" if tail else problem,
            restarts=restarts,
            timings=timings,
        )
    failure = run_post_start(spec, port)
    if failure:
        return StartOutcome("failed", container_id, error=failure, restarts=restarts)
    return StartOutcome("healthy", container_id, restarts=restarts, timings=timings)


def _restart_count(container: Any) -> int:
    try:
        container.reload()
        return int(container.attrs.get("RestartCount") or 0)
    except Exception:
        return 0


def run_post_start(spec: dict[str, Any], port: int) -> str:
    """The spec's HTTP steps after the first healthy answer; an error text or ''."""
    for step in spec.get("post_start") or []:
        method = str(step.get("method", "POST")).upper()
        step_port = int(step.get("port") or 0) or port
        url = f"http://127.0.0.1:{step_port}{step.get('path', '/')}"
        try:
            answer = requests.request(
                method,
                url,
                json=step.get("json", step.get("body")),
                timeout=step.get("timeout", 30),
            )
        except requests.RequestException as exc:
            return f"post-start step {method} {url} failed: {exc}"
        if answer.status_code >= 400:
            return f"post-start step {method} {url} answered {answer.status_code}"
    return ""


def stop_replica(name: str, *, driver: DockerDriver) -> bool:
    """Stop and remove the container; True when there was one. Idempotent."""
    client = driver.sdk()
    with translated_errors("stop the replica's container"):
        container = _find(client, name)
        if container is None:
            return False
        try:
            container.stop(timeout=STOP_TIMEOUT_S)
        except NotFound:
            return False
        with contextlib.suppress(NotFound):
            container.remove(force=True)
    return True


def replica_logs(name: str, tail: int = 200, *, driver: DockerDriver) -> str:
    client = driver.sdk()
    with translated_errors("read the replica's logs"):
        container = _find(client, name)
        if container is None:
            return ""
        return _logs(container, tail)
