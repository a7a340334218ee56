"""Smoke test: `scripts/run` in the embedded mode, exactly as a user starts it.

No DATABASE_URL / REDIS_URL, so the product uses SQLite and the Valkey server runfleet starts,
both under FLEET_STATE_DIR (a temporary folder here). The test does not touch the test database.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import requests

from tests.ports import free_port
from tests.smoke.run_command import (
    embedded_environ,
    kill_everything,
    read_log,
    start,
    stop,
    wait_until_ready,
)

pytestmark = [pytest.mark.slow]

ADMIN_PASSWORD = "smoke-test-admin-password-2024"


def test_run_command_serves_the_console_and_stops_on_ctrl_c(tmp_path):
    state_dir = tmp_path / "state"
    log_path = tmp_path / "run.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # A machine without Docker: the run still starts, and says how to get it.
    env = embedded_environ(
        state_dir, port, ADMIN_PASSWORD, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock"
    )
    proc = start(env, log_path)
    try:
        ready = wait_until_ready(proc, base_url, log_path)
        assert ready["checks"] == {"database": "ok", "broker": "ok"}, (ready, read_log(log_path))
        # The embedded mode really is embedded: SQLite and the Valkey server that web, worker,
        # beat and agent share live in the state dir, and Valkey listens on no TCP port.
        assert (state_dir / "fleet.sqlite3").exists(), read_log(log_path)
        assert (state_dir / "valkey" / "valkey.sock").is_socket(), read_log(log_path)
        assert f"on {state_dir / 'valkey' / 'valkey.sock'}" in read_log(log_path)
        assert "No Docker engine is reachable here" in read_log(log_path)
        assert "apt-get install docker.io" in read_log(log_path)
        deadline = time.monotonic() + 30  # the worker consumes from it too
        while "Connected to redis+socket://" not in read_log(log_path):
            assert time.monotonic() < deadline, read_log(log_path)
            time.sleep(0.5)

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

        # --- Ctrl-C stops everything cleanly, Valkey included --------------------------------
        valkey_pid = int(re.search(r"started valkey \(pid (\d+)\)", read_log(log_path))[1])
        stop(proc, log_path)
        with pytest.raises(ProcessLookupError):
            os.kill(valkey_pid, 0)
        assert not (state_dir / "valkey" / "valkey.sock").exists()
        # Nothing is left listening on the port.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base_url}/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            kill_everything(proc, log_path)
