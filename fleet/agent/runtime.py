"""What every agent task shares: the Celery app, the :class:`Runtime` and ``configure``.

Plain Celery with no Django fix-up: the agent never loads the control plane's settings,
models or database. The tasks live in :mod:`fleet.agent.worker` (and modules it imports,
such as :mod:`fleet.agent.replica_logs`); they all register on :data:`app` from here, so no
task module needs to import another.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from fleet.agent.client import ServerClient
from fleet.agent.docker_driver import DockerDriver
from fleet.agent.state import AgentState

app = Celery("fleet-agent", fixups=[], set_as_current=True)


class Runtime:
    """What tasks need, set by the agent before the worker starts (inherited by forks)."""

    data_dir: Path
    server: str
    ca_file: str | None = None
    docker_url: str | None = None
    llama_cpp_tools: str | None = None  # --llama-cpp-tools / FLEET_LLAMA_CPP_TOOLS

    _client: ServerClient | None = None
    _driver: DockerDriver | None = None

    @classmethod
    def client(cls) -> ServerClient:
        """The server client of this process: one HTTP session (kept-alive connection)."""
        state = AgentState.load(cls.data_dir)  # re-read: the credential may have been rotated
        if state is None:
            raise RuntimeError("the agent has no state; it must join first")
        client = cls._client
        if client is None or client.server != cls.server.rstrip("/"):
            client = cls._client = ServerClient(cls.server, ca_file=cls.ca_file)
        client.credential = state.credential
        return client

    @classmethod
    def forget_client(cls) -> None:
        client, cls._client = cls._client, None
        if client is not None:
            client.session.close()

    @classmethod
    def driver(cls) -> DockerDriver:
        """The Docker driver of this process: connected (API version negotiated) once, not
        per command; ``forget_driver`` after a failure makes the next command reconnect."""
        if cls._driver is None:
            cls._driver = DockerDriver(base_url=cls.docker_url, timeout=30)
        return cls._driver

    @classmethod
    def forget_driver(cls) -> None:
        driver, cls._driver = cls._driver, None
        if driver is not None:
            driver.close()


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
