"""Helpers for the node tests: heartbeat payloads, real agent processes, a Docker socket proxy.

Agents are started exactly as an operator would (``python manage.py fleet_agent ...``) in
their own process group, so that stopping one also stops its Celery prefork child. Every
agent started through :class:`AgentRunner` is stopped by :meth:`AgentRunner.stop_all`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 15.0
T = TypeVar("T")


# --- Heartbeat payloads ----------------------------------------------------------------------
def heartbeat_payload(**overrides: Any) -> dict[str, Any]:
    """A valid, healthy heartbeat (no GPUs, Docker reachable, plenty of disk, clock in sync)."""
    payload: dict[str, Any] = {
        "agent_version": "0.1.0",
        "sent_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "host": {"hostname": "host-a", "os": "Debian 12", "kernel": "6.1.0", "arch": "x86_64"},
        "cpu": {"model": "Test CPU", "cores": 8, "load_1m": 0.5, "usage_percent": 12.5},
        "memory": {"total_bytes": 32 * 2**30, "available_bytes": 16 * 2**30},
        "disk": {"path": "/var/lib/agent", "total_bytes": 500 * 2**30, "free_bytes": 400 * 2**30},
        "gpus": [],
        "gpu_driver": {"driver_version": None, "cuda_version": None, "error": None},
        "docker": {"reachable": True, "version": "27.0.1", "api_version": "1.41", "error": None},
        "containers": [],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(payload.get(key), dict):
            payload[key] = {**payload[key], **value}
        else:
            payload[key] = value
    return payload


# --- Waiting ---------------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.2,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout:.1f} s: {text}")
        time.sleep(interval)


# --- Agent processes -------------------------------------------------------------------------
def agent_env() -> dict[str, str]:
    """The test's environment without anything that would make the agent load Django."""
    env = dict(os.environ)
    for key in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_URL"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Agent:
    name: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} log ({self.log_path}) ---\n{self.output()[-chars:]}"

    def state(self) -> dict[str, Any] | None:
        path = self.data_dir / "agent.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"agent {self.name} still runs after {timeout} s\n{self.tail()}"
            ) from None

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """kill -9 the whole process group (main process and its prefork child)."""
        pids = self.pids()
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        wait_until(
            lambda: not any(_alive(pid) for pid in pids),
            STOP_TIMEOUT_S,
            message=lambda: f"processes of agent {self.name} survive kill -9: {pids}",
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group; SIGKILL it if it is still there after ``timeout``."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # the main process may be gone while a child of its group lingers
        self._signal_group(signal.SIGKILL)
        return self.proc.returncode

    def pids(self) -> list[int]:
        """The main process and its children (the Celery pool)."""
        import psutil

        try:
            main = psutil.Process(self.proc.pid)
            return [main.pid, *(child.pid for child in main.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead enough)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class AgentRunner:
    """Starts agents against one server; ``stop_all`` is for the test's finalizer."""

    def __init__(self, base_dir: Path, server: str) -> None:
        self.base_dir = base_dir
        self.server = server
        self.agents: list[Agent] = []

    def start(
        self,
        name: str,
        *,
        join_token: str | None = None,
        data_dir: Path | None = None,
        server: str | None = None,
        docker_url: str | None = None,
        heartbeat_interval: float | None = 1,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Agent:
        data_dir = data_dir or self.base_dir / name
        argv = [
            sys.executable,
            "manage.py",
            "fleet_agent",
            "--server",
            server or self.server,
            "--name",
            name,
            "--data-dir",
            str(data_dir),
        ]
        if join_token is not None:
            argv += ["--join-token", join_token]
        if heartbeat_interval is not None:
            argv += ["--heartbeat-interval", str(heartbeat_interval)]
        if docker_url is not None:
            argv += ["--docker-url", docker_url]
        argv += extra or []
        runs = sum(1 for agent in self.agents if agent.name == name)
        log_path = self.base_dir / f"{name}.{runs}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = agent_env()
        environment.pop("FLEET_JOIN_TOKEN", None)
        environment.update(env or {})
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        agent = Agent(name=name, data_dir=data_dir, log_path=log_path, proc=proc, argv=argv)
        self.agents.append(agent)
        return agent

    def tails(self) -> str:
        return "\n".join(agent.tail() for agent in self.agents)

    def stop_all(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.stop()


# kombu.utils.json does ``from django.utils.functional import Promise`` whenever Django is
# installed (as it is with the project's package): a few pure utility modules, no settings,
# no apps, no database. Anything beyond these means the agent loaded Django itself.
KOMBU_DJANGO_UTILS = frozenset(
    {
        "django",
        "django.utils",
        "django.utils.functional",
        "django.utils.regex_helper",
        "django.utils.version",
    }
)


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from ``python -X importtime`` (PYTHONPROFILEIMPORTTIME=1) output."""
    modules = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                modules.add(name)
    return modules


# --- Redis queues ----------------------------------------------------------------------------
def purge_node_queues(redis_url: str, node_ids: list[int] | None = None) -> int:
    """Delete the kombu lists of ``node.<id>`` queues (all of them, or only ``node_ids``).

    kombu's Redis transport keeps a queue as a list named after it (plus priority lists
    named ``<queue>\\x06\\x16<n>``); deleting them drops stale messages of earlier runs.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deleted = 0
        wanted = None if node_ids is None else {str(node_id) for node_id in node_ids}
        for key in client.scan_iter(match="node.*", count=1000):
            name = key.decode("latin-1")[len("node.") :]
            node_id = name.split("\x06", 1)[0]
            if wanted is None or node_id in wanted:
                deleted += client.delete(key)
        return deleted
    finally:
        client.close()


def queue_length(redis_url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


# --- A Docker engine that can be switched off ------------------------------------------------
class UnixSocketProxy:
    """Forwards a unix socket to the Docker engine's; ``stop`` makes the engine unreachable.

    Stopping closes the listening socket (removing its file) and every forwarded connection,
    so clients see "connection refused / no such file" exactly as with a stopped engine.
    """

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.target = target
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._stopping = threading.Event()
        thread = threading.Thread(target=self._accept, args=(listener, self._stopping), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _accept(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._connections.update((client, upstream))
            thread = threading.Thread(
                target=self._pump, args=(client, upstream, stopping), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
        peers = {a: b, b: a}
        try:
            while not stopping.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._connections.discard(a)
                self._connections.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
