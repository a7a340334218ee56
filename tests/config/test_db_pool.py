"""The ASGI web process under uvicorn, as production runs it, reuses pooled PostgreSQL
connections across API requests (without the pool every request opened and closed one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from django.db import connection

from core.choices import Role, TokenScope
from core.history import ChangeContext
from core.services import create_token, create_user
from tests.ports import free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = f"fleet-pool-test-{os.getpid()}"


def database_url() -> str:
    """The test database's URL, tagged with an application_name to find its sessions by."""
    params = connection.settings_dict
    host, port = params["HOST"] or "127.0.0.1", params["PORT"] or 5432
    user = params["USER"] + (f":{params['PASSWORD']}" if params["PASSWORD"] else "")
    query = urlencode({"application_name": APP_NAME})
    return f"postgres://{user}@{host}:{port}/{params['NAME']}?{query}"


def sessions() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
        return {row[0] for row in cursor.fetchall()}


def test_api_requests_share_pooled_connections(tmp_path):
    ctx = ChangeContext.system("test")
    user, _ = create_user(ctx, username="pool-admin", role=Role.ADMIN)
    _, key = create_token(ctx, owner=user, name="pool", scope=TokenScope.READ)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO_"))}
    env.update(DATABASE_URL=database_url(), FLEET_STATE_DIR=str(tmp_path))
    log = tmp_path / "uvicorn.log"
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)]
    with log.open("wb") as out:
        web = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/nodes/"
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60
        while True:
            assert web.poll() is None, log.read_text(errors="replace")
            try:
                requests.get(url, headers=headers, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        seen: set[int] = set()
        for _ in range(12):
            answer = requests.get(url, headers=headers, timeout=5)
            assert answer.status_code == 200, answer.text
            seen |= sessions()  # after the answer: a closed connection would be gone by now
        assert seen, "the web process keeps no connection open between requests"
        assert len(seen) <= 3, f"{len(seen)} server sessions for 12 requests"
    finally:
        web.terminate()
        web.wait(timeout=20)
