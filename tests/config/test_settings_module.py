"""Settings as a whole, loaded in a fresh interpreter with a given environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def run_manage(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"):
        env.pop(name, None)
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "FLEET_ENV": "production",
        "FLEET_STATE_DIR": str(tmp_path),
        "SECRET_KEY": "x7!Qm#9vR2$kL8pZ4wN6^tB1yH3&jF5cD0sA-gE_uI+oP=rT~eW",
        "ALLOWED_HOSTS": "fleet.example.com",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "FLEET_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def test_check_deploy_is_clean_in_production(tmp_path):
    result = run_manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_requires_its_variables(tmp_path):
    for missing in (
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "FLEET_ENCRYPTION_KEYS",
    ):
        env = production_env(tmp_path)
        del env[missing]
        result = run_manage(env, "check")
        assert result.returncode != 0
        assert missing in result.stderr, (missing, result.stderr[-500:])


def test_bad_values_fail_at_start_naming_the_variable(tmp_path):
    cases = {
        "FLEET_ENV": "staging",
        "FLEET_DEBUG": "perhaps",
        "FLEET_ENCRYPTION_KEYS": "not-a-fernet-key",
        "REDIS_URL": "http://127.0.0.1:6379",
        "FLEET_LOGIN_FAILURE_LIMIT": "0",
    }
    for name, value in cases.items():
        result = run_manage({"FLEET_STATE_DIR": str(tmp_path), name: value}, "check")
        assert result.returncode != 0, name
        assert name in result.stderr, (name, result.stderr[-500:])


def test_embedded_mode_generates_and_keeps_its_secrets(tmp_path):
    result = run_manage({"FLEET_STATE_DIR": str(tmp_path)}, "check")
    assert result.returncode == 0, result.stderr
    key = (tmp_path / "secret_key").read_text()
    encryption_key = (tmp_path / "encryption_key").read_text()
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    run_manage({"FLEET_STATE_DIR": str(tmp_path)}, "check")
    assert (tmp_path / "secret_key").read_text() == key
    assert (tmp_path / "encryption_key").read_text() == encryption_key


def database_settings(env_overrides: dict[str, str], *, asgi: bool) -> dict[str, Any]:
    """settings.DATABASES["default"] as a fresh process loads it: the ASGI web process
    (``config.asgi`` imported first, as uvicorn does) or any other process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO_"))}
    env.update(env_overrides)
    load = "import config.asgi" if asgi else "import django; django.setup()"
    code = (
        f"import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        f"{load}\nfrom django.conf import settings\n"
        "print(json.dumps(settings.DATABASES['default'], default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_asgi_web_process_pools_postgresql_connections(tmp_path):
    env = {"FLEET_STATE_DIR": str(tmp_path), "FLEET_DB_POOL_SIZE": "7"}
    web = database_settings(env, asgi=True)
    assert web["CONN_MAX_AGE"] == 0
    assert web["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 7, "timeout": 10, "name": "fleet"}
    other = database_settings(env, asgi=False)  # Celery, beat, manage.py: one per thread
    assert other["CONN_MAX_AGE"] == 60 and "pool" not in other.get("OPTIONS", {})
    assert "pool" in database_settings({**env, "FLEET_DB_POOL": "on"}, asgi=False)["OPTIONS"]
    off = database_settings({**env, "FLEET_DB_POOL": "off"}, asgi=True)
    assert off["CONN_MAX_AGE"] == 60 and "pool" not in off.get("OPTIONS", {})


def test_embedded_sqlite_never_pools(tmp_path):
    env = {"FLEET_STATE_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/f.db"}
    assert "pool" not in database_settings(env, asgi=True)["OPTIONS"]


def test_pool_variables_are_checked_at_start(tmp_path):
    for name, value in {"FLEET_DB_POOL": "sometimes", "FLEET_DB_POOL_SIZE": "1"}.items():
        result = run_manage({"FLEET_STATE_DIR": str(tmp_path), name: value}, "check")
        assert result.returncode != 0, name
        assert name in result.stderr, (name, result.stderr[-500:])
