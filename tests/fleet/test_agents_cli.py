"""The agent's command line and worker set-up, without a control plane (fast).

Anything that imports ``fleet.agent.worker`` runs in a subprocess: that module creates the
agent's Celery app as the current app, which must not leak into the test process.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.agent.state import AgentState
from tests.fleet.agents import KOMBU_DJANGO_UTILS, REPO_ROOT, agent_env


def run_python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env or agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_credential_and_no_join_token_means_no_joining(tmp_path):
    """Even with DJANGO_SETTINGS_MODULE set, the agent loads no Django on its way."""
    env = agent_env()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    data_dir = tmp_path / "agent"
    code = f"""
        import atexit, sys
        def report():
            django = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
            print("DJANGO MODULES:", django, file=sys.stderr)
        atexit.register(report)
        sys.argv = ["manage.py", "fleet_agent", "--server", "http://127.0.0.1:9",
                    "--name", "lonely", "--data-dir", {str(data_dir)!r}]
        import runpy
        runpy.run_path("manage.py", run_name="__main__")
    """
    done = run_python(code, env=env)

    assert done.returncode != 0, done
    assert "no --join-token given" in done.stderr, done.stderr
    assert "Create a join token" in done.stderr
    loaded = done.stderr.split("DJANGO MODULES:", 1)[1].strip()
    assert set(json.loads(loaded.replace("'", '"'))) <= KOMBU_DJANGO_UTILS, loaded
    assert "Traceback" not in done.stderr
    assert not (data_dir / "agent.json").exists()


def test_the_agent_imports_no_django_and_its_worker_is_configured_for_one_queue(tmp_path):
    env = agent_env()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    code = """
        import json, sys
        from fleet.agent import cli, worker
        from fleet.agent.state import AgentState
        state = AgentState(server="http://cp", node_id=42, name="n42", credential="slmn_x",
                           queue="node.42", broker_url="redis://127.0.0.1:6379/0",
                           broker_transport_options={"visibility_timeout": 3600})
        app = worker.configure(state)
        conf = app.conf
        print(json.dumps({
            "django": sorted(m for m in sys.modules if m == "django" or m.startswith("django.")),
            "fixups": list(app.fixups),
            "acks_late": conf.task_acks_late,
            "reject_on_worker_lost": conf.task_reject_on_worker_lost,
            "prefetch": conf.worker_prefetch_multiplier,
            "default_queue": conf.task_default_queue,
            "broker": conf.broker_url,
            "serializer": conf.task_serializer,
            "accept": list(conf.accept_content),
            "tasks": sorted(t for t in app.tasks if t.startswith("fleet.")),
        }))
    """
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])

    assert set(info["django"]) <= KOMBU_DJANGO_UTILS, info["django"]
    assert not any(
        m.startswith(("django.db", "django.conf", "django.apps")) for m in info["django"]
    )
    assert info["fixups"] == []
    assert info["acks_late"] is True
    assert info["reject_on_worker_lost"] is True
    assert info["prefetch"] == 1
    assert info["default_queue"] == "node.42"
    assert info["broker"] == "redis://127.0.0.1:6379/0"
    assert info["serializer"] == "json" and info["accept"] == ["json"]
    assert "fleet.agent.probe" in info["tasks"]
    assert all(name.startswith("fleet.agent.") for name in info["tasks"]), info["tasks"]


def test_state_file_is_written_0600_whatever_the_umask(tmp_path):
    state = AgentState(
        server="http://cp",
        node_id=7,
        name="n7",
        credential="slmn_secret",
        queue="node.7",
        broker_url="redis://x",
    )
    old = os.umask(0)
    try:
        state.save(tmp_path / "data")
    finally:
        os.umask(old)

    path = tmp_path / "data" / "agent.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "data" / "agent.tmp").exists()
    assert AgentState.load(tmp_path / "data") == state


def test_an_unreadable_state_file_stops_the_agent_with_a_clear_message(tmp_path: Path):
    (tmp_path / "agent.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        AgentState.load(tmp_path)
    assert "cannot be read" in str(stopped.value) and "remove it to join again" in str(
        stopped.value
    )


def test_an_address_that_is_not_an_ip_stops_the_agent_before_it_joins(tmp_path: Path):
    env = agent_env()
    env["FLEET_AGENT_ADDRESS"] = "gpu-box.internal"
    data_dir = tmp_path / "agent"
    done = subprocess.run(
        [sys.executable, "manage.py", "fleet_agent", "--server", "http://127.0.0.1:9",
         "--name", "named", "--join-token", "slmj_x", "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "FLEET_AGENT_ADDRESS='gpu-box.internal' is not an IP address" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data_dir / "agent.json").exists()
