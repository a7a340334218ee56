"""`scripts/run` started as a user starts it, for the smoke tests: its own session, its output in
a log file, ready when ``/readyz`` answers 200; killed by the process groups it reported after a
failure."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(no output)"


def embedded_environ(state_dir: Path, port: int, password: str, **extra: str) -> dict[str, str]:
    """The test process's environment without DATABASE_URL / REDIS_URL: the embedded mode."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        FLEET_STATE_DIR=str(state_dir),
        FLEET_PORT=str(port),
        FLEET_HOST="127.0.0.1",
        FLEET_ADMIN_PASSWORD=password,
        **extra,
    )
    # The test process may run with this on (the browser tests set it); the product must not.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


def start(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``scripts/run [args]`` (its arguments go to ``manage.py runfleet``)."""
    with log_path.open("wb") as log:
        # Own session, like a terminal job: a SIGINT reaches only the run command, which must
        # stop what it started itself.
        return subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "run"), *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_everything(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Last resort after a failure: kill the run command and the children it started.

    runfleet starts Valkey, web, worker, beat and the agent in sessions of their own, so
    killing its process group alone would leave them running; their pids are in its output
    ("started web (pid N)"). Each is killed by its own process group id, which it leads.
    """
    pids = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", read_log(log_path))]
    for pid in [proc.pid, *pids]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_until_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> Any:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"scripts/run exited with {proc.returncode} before it was ready:\n"
                f"{read_log(log_path)}"
            )
        try:
            response = requests.get(f"{base_url}/readyz", timeout=5)
        except requests.RequestException as error:
            last = f"{error.__class__.__name__}: {error}"
        else:
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        time.sleep(0.5)
    pytest.fail(
        f"/readyz did not answer 200 within {READY_TIMEOUT_S} s (last: {last}):\n"
        f"{read_log(log_path)}"
    )


def stop(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30) -> str:
    """Ctrl-C, as a terminal sends it; the output once it exited 0 (else the test fails)."""
    proc.send_signal(signal.SIGINT)
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/run did not stop within {timeout} s of SIGINT:\n{read_log(log_path)}")
    output = read_log(log_path)
    assert returncode == 0, f"exit status {returncode}:\n{output}"
    assert "stopped." in output, output
    return output
