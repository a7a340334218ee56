"""The agent's Celery worker: consumes only its node's queue; tasks report over the API.

Plain Celery with no Django fix-up: the agent never loads the control plane's settings,
models or database. Task names are ``fleet.agent.<command kind>``; the control plane sends
them by name with an expiry, so an agent that comes back late drops stale orders.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fleet.agent import replica_logs  # noqa: F401  (registers fleet.agent.replica_logs)
from fleet.agent.docker_driver import DockerDriver

# ``app``, ``Runtime`` and ``configure`` live in fleet.agent.runtime (shared with the task
# modules such as replica_logs); named here too, for ``from fleet.agent.worker import app``.
from fleet.agent.runtime import Runtime as Runtime
from fleet.agent.runtime import app as app
from fleet.agent.runtime import configure as configure
from fleet.agent.state import AgentState
from fleet.agent.version import AGENT_VERSION

log = logging.getLogger("fleet.agent")


@app.task(name="fleet.agent.probe", ignore_result=True)
def probe(command_id: int, arguments: dict[str, Any] | None = None) -> None:
    """Round trip check: engine info and this host's clock, sent back to the control plane."""
    started = time.monotonic()
    driver = DockerDriver(base_url=Runtime.docker_url)
    try:
        engine = driver.engine_info()
    finally:
        driver.close()
    result = {
        "agent_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "agent_version": AGENT_VERSION,
        "docker": engine,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    Runtime.client().command_result(command_id, result=result, error=None)
    log.info("probe %s answered", command_id)


@app.task(name="fleet.agent.download", ignore_result=True)
def download(job_id: int, arguments: dict[str, Any] | None = None) -> None:
    """A download job: claim it over the API, fetch into <data_dir>/hub, report the outcome."""
    from fleet.agent.downloads import run_job

    state = AgentState.load(Runtime.data_dir)
    outcome = run_job(
        job_id,
        Runtime.client(),
        Runtime.data_dir,
        Runtime.server,
        node_name=state.name if state else "this node",
    )
    log.info("download job %s: %s", job_id, outcome)


@app.task(name="fleet.agent.quantize", ignore_result=True)
def quantize(job_id: int, arguments: dict[str, Any] | None = None) -> None:
    """A quantize job: fetch the source, run the tools, evaluate, upload, report."""
    from fleet.agent.quantize import run_job as run_quantize

    state = AgentState.load(Runtime.data_dir)
    outcome = run_quantize(
        job_id,
        Runtime.client(),
        Runtime.data_dir,
        Runtime.server,
        node_name=state.name if state else "this node",
        tools_path=Runtime.llama_cpp_tools,
    )
    log.info("quantize job %s: %s", job_id, outcome)


@app.task(name="fleet.agent.delete_model", ignore_result=True)
def delete_model(command_id: int, arguments: dict[str, Any] | None = None) -> None:
    """Remove a variant's files from the hub cache; blobs another snapshot uses stay."""
    from fleet.agent.downloads import DownloadError, delete_files

    args = arguments or {}
    try:
        result = delete_files(
            Runtime.data_dir,
            str(args.get("repo_id", "")),
            str(args.get("commit", "")),
            [str(p) for p in args.get("paths") or []],
        )
    except (DownloadError, OSError) as exc:
        Runtime.client().command_result(command_id, result=None, error=str(exc))
        return
    Runtime.client().command_result(command_id, result=result, error=None)
    log.info("delete_model %s: %s", command_id, result)


def _report_replica(replica_id: int, body: dict[str, Any]) -> None:
    """Tell the control plane; a lost report is harmless (the reconciler sends again)."""
    from fleet.agent.client import ServerRefused, ServerUnreachable

    if not replica_id:
        return  # an orphan container: nobody to tell
    try:
        try:
            Runtime.client().replica_status(replica_id, body)
        except ServerUnreachable:  # perhaps a kept-alive connection the server closed
            Runtime.forget_client()
            Runtime.client().replica_status(replica_id, body)
    except (ServerRefused, ServerUnreachable) as exc:
        log.warning("replica %s: status %s not delivered: %s", replica_id, body["state"], exc)


@app.task(name="fleet.agent.replica_start", ignore_result=True)
def replica_start(
    replica_id: int,
    spec: dict[str, Any],
    model: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Start (or keep) a replica's container and wait a short while for its health endpoint.

    The wait is bounded by ``options["wait_s"]`` (the node runs one command at a time): when
    it runs out the report says ``starting`` and the control plane sends the start again.
    """
    from fleet.agent.containers import snapshot_dir, start_replica

    picked_at = time.time()
    opts = options or {}
    model_dir = None
    if model and model.get("repo_id") and model.get("commit"):
        model_dir = snapshot_dir(Runtime.data_dir, str(model["repo_id"]), str(model["commit"]))
    try:
        outcome = start_replica(
            spec,
            model_dir,
            port=int(opts.get("port") or 0),
            wait_s=float(opts.get("wait_s") or 10),
            driver=Runtime.driver(),
        )
    except BaseException:
        Runtime.forget_driver()
        raise
    if outcome.state == "failed":
        Runtime.forget_driver()  # the engine may have restarted: reconnect next time
    reporting = time.monotonic()
    _report_replica(replica_id, outcome.report())
    outcome.timings["report_ms"] = round((time.monotonic() - reporting) * 1000, 1)
    outcome.timings["picked_at"] = round(picked_at, 4)
    if opts.get("sent_at"):
        outcome.timings["order_ms"] = round((picked_at - float(opts["sent_at"])) * 1000, 1)
    log.info("replica %s: %s %s", replica_id, outcome.state, outcome.timings)


@app.task(name="fleet.agent.replica_stop", ignore_result=True)
def replica_stop(replica_id: int, container_name: str) -> None:
    """Stop and remove a replica's container (idempotent); ``replica_id`` 0 for orphans."""
    from fleet.agent.containers import stop_replica
    from fleet.agent.errors import AdapterError

    try:
        stop_replica(container_name, driver=Runtime.driver())
    except AdapterError as exc:
        Runtime.forget_driver()
        log.warning("replica %s: cannot stop %s: %s", replica_id, container_name, exc.message)
        return  # the control plane sends the stop again
    _report_replica(
        replica_id, {"state": "stopped", "container_id": "", "error": "", "restarts": 0}
    )
    log.info("replica %s: container %s removed", replica_id, container_name)
