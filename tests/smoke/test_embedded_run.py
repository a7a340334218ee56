"""Smoke test: `scripts/run` in the embedded mode, exactly as a user starts it.

No DATABASE_URL / REDIS_URL, so the product uses SQLite and the file-system broker under
FLEET_STATE_DIR (a temporary folder here). The test does not touch the test database.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.ports import free_port

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
ADMIN_PASSWORD = "smoke-test-admin-password-2024"


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(no output)"


def kill_everything(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Last resort after a failure: kill the run command and the children it started.

    runfleet starts web, worker and beat in sessions of their own, so killing its process
    group alone would leave them running; their pids are in its output ("started web
    (pid N)"). Each is killed by its own process group id, which it leads.
    """
    pids = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", read_log(log_path))]
    for pid in [proc.pid, *pids]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_until_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> dict:
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


def test_run_command_serves_the_console_and_stops_on_ctrl_c(tmp_path):
    state_dir = tmp_path / "state"
    log_path = tmp_path / "run.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        FLEET_STATE_DIR=str(state_dir),
        FLEET_PORT=str(port),
        FLEET_HOST="127.0.0.1",
        FLEET_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    # The test process may run with this on (the browser tests set it); the product must not.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)

    with log_path.open("wb") as log:
        # Own session, like a terminal job: the SIGINT below reaches only the run command,
        # which must stop web, worker and beat itself.
        proc = subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "run")],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = wait_until_ready(proc, base_url, log_path)
        assert ready["checks"] == {"database": "ok", "broker": "ok"}, (ready, read_log(log_path))
        # The embedded mode really is embedded: SQLite and the broker live in the state dir.
        assert (state_dir / "fleet.sqlite3").exists(), read_log(log_path)
        assert (state_dir / "broker" / "queue").is_dir(), read_log(log_path)

        # --- sign in through the login form, as a browser would ---------------------------
        session = requests.Session()
        login_url = f"{base_url}/login/"
        form = session.get(login_url, timeout=10)
        assert form.status_code == 200, read_log(log_path)
        csrf = session.cookies.get("csrftoken")
        assert csrf, f"no csrftoken cookie: {form.headers}"
        response = session.post(
            login_url,
            data={"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": csrf},
            headers={"Referer": login_url},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, (response.status_code, response.text[:2000])
        assert response.headers["Location"] == "/", response.headers
        overview = session.get(f"{base_url}/", timeout=10)
        assert overview.status_code == 200, (overview.text[:2000], read_log(log_path))
        assert "Overview" in overview.text
        assert 'data-testid="current-user">admin<' in overview.text

        me = session.get(f"{base_url}/api/v1/me/", timeout=10)
        assert me.status_code == 200, (me.text, read_log(log_path))
        assert me.json()["username"] == "admin"
        assert me.json()["role"] == "admin"

        # --- Ctrl-C stops everything cleanly ------------------------------------------------
        proc.send_signal(signal.SIGINT)
        try:
            returncode = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"scripts/run did not stop within {STOP_TIMEOUT_S} s of SIGINT:\n"
                f"{read_log(log_path)}"
            )
        output = read_log(log_path)
        assert returncode == 0, f"exit status {returncode}:\n{output}"
        assert "stopped." in output, output
        # Nothing is left listening on the port.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base_url}/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            kill_everything(proc, log_path)
