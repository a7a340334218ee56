"""What a benchmark needs running, checked or started before it measures anything.

PostgreSQL and Redis are checked (``scripts/test`` installs and starts both; the error says
so in one line). The Docker engine is started the way ``scripts/test`` starts it
(``scripts/lib.sh``: ``dockerd --bridge=none --iptables=false``) when it is not running, and
stopped again by its PID when the benchmark ends, as ``scripts/test`` stops the one it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERD_LOG = ROOT / "var" / "bench" / "dockerd.log"
DOCKER_START_TIMEOUT_S = 60
DOCKER_STOP_TIMEOUT_S = 20
PORTS = {"postgres": ("PostgreSQL", 5432), "redis": ("Redis", 6379)}
FIRST = "run scripts/test once (it installs and starts it), or start it yourself"


class Missing(Exception):
    """A service the benchmark needs is not there; the message says what to run first."""


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _docker_answers() -> bool:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=5)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except DockerException:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def docker_engine(log: Callable[[str], None] = print) -> Iterator[None]:
    """The Docker engine for the duration of the block: the running one, else one started here
    (and stopped here)."""
    if _docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise Missing(
            "the Docker engine is not installed: run scripts/test once (it installs Debian's "
            "docker.io), or install Docker"
        )
    if os.geteuid() != 0:
        raise Missing("the Docker engine is not running and starting it needs root: start it")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - the engine's own binary, no shell
            [dockerd, "--bridge=none", "--iptables=false"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    log(f"started the Docker engine (pid {proc.pid}; log {DOCKERD_LOG.relative_to(ROOT)})")
    try:
        deadline = time.monotonic() + DOCKER_START_TIMEOUT_S
        while not _docker_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = DOCKERD_LOG.read_text(errors="replace").splitlines()[-5:]
                raise Missing(
                    f"the Docker engine did not start (see {DOCKERD_LOG}): " + " | ".join(tail)
                )
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            log(f"stopping the Docker engine this benchmark started (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=DOCKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def services(*needs: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """``needs``: any of 'postgres', 'redis' (checked), 'docker' (started when not running),
    'wrk' (checked)."""
    for need in needs:
        if need in PORTS:
            name, port = PORTS[need]
            if not _listening(port):
                raise Missing(f"{name} is not reachable on 127.0.0.1:{port}: {FIRST}")
        elif need == "wrk" and shutil.which("wrk") is None:
            raise Missing("wrk is not installed: run scripts/test once (it installs Debian's wrk)")
    with docker_engine(log) if "docker" in needs else contextlib.nullcontext():
        yield
