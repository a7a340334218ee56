"""The agent's Celery worker: consumes only its node's queue; tasks report over the API.

Plain Celery with no Django fix-up: the agent never loads the control plane's settings,
models or database. Task names are ``fleet.agent.<command kind>``; the control plane sends
them by name with an expiry, so an agent that comes back late drops stale orders.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery

from fleet.agent.client import ServerClient
from fleet.agent.docker_driver import DockerDriver
from fleet.agent.state import AgentState
from fleet.agent.version import AGENT_VERSION

log = logging.getLogger("fleet.agent")

app = Celery("fleet-agent", fixups=[], set_as_current=True)


class Runtime:
    """What tasks need, set by the agent before the worker starts (inherited by forks)."""

    data_dir: Path
    server: str
    ca_file: str | None = None
    docker_url: str | None = None

    @classmethod
    def client(cls) -> ServerClient:
        state = AgentState.load(cls.data_dir)  # re-read: the credential may have been rotated
        if state is None:
            raise RuntimeError("the agent has no state; it must join first")
        client = ServerClient(cls.server, ca_file=cls.ca_file)
        client.credential = state.credential
        return client


def configure(state: AgentState) -> Celery:
    app.conf.update(
        broker_url=state.broker_url,
        broker_transport_options=state.broker_transport_options or {},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_default_queue=state.queue,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


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
