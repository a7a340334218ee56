"""A real Prometheus (Debian's package) for the tests: started by PID, stopped by PID.

:class:`PrometheusServer` writes a configuration into a temporary folder, starts
``prometheus`` on a free loopback port with its own storage there, waits until it is ready
and answers its HTTP API. Nothing is skipped: a missing binary fails the test and says how
to install it (``scripts/test`` does, through ``ensure_prometheus`` in scripts/lib.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"
SHIPPED_RULES = REPO / "docker" / "prometheus" / "rules" / "fleet.yml"
DASHBOARDS = REPO / "docker" / "grafana" / "dashboards"


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    assert path, (
        f"{name} is not installed: run scripts/test (it installs Debian's prometheus package) "
        "or apt-get install -y prometheus"
    )
    return path


class PrometheusServer:
    def __init__(self, folder: Path, config: dict[str, Any], rules: list[Path] = ()) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        rule_files = []
        for index, rule in enumerate(rules):
            copy = folder / f"rules-{index}.yml"
            copy.write_bytes(rule.read_bytes())
            rule_files.append(str(copy))
        self.config = {**config, "rule_files": rule_files}
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log_path = folder / "prometheus.log"

    def start(self) -> PrometheusServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(lambda: self._ready(), 30, "Prometheus did not become ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited ({self.process.returncode}):\n{self.log()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def api(self, path: str, **params: Any) -> Any:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def wait(self, check: Callable[[], Any], timeout: float, message: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"{message} within {timeout} s (last: {last!r})\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def scrape_job(name: str, base_url: str, token: str, **extra: Any) -> dict[str, Any]:
    """The shipped control-plane job, pointed at a test server."""
    host = base_url.split("://", 1)[1]
    return {
        "job_name": name,
        "scrape_interval": "1s",
        "metrics_path": "/metrics",
        "authorization": {"type": "Bearer", "credentials": token},
        "static_configs": [{"targets": [host]}],
        **extra,
    }


def sd_job(name: str, base_url: str, token: str) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": "1s",
        "http_sd_configs": [
            {
                "url": f"{base_url}/api/v1/prometheus/targets/",
                "refresh_interval": "1s",
                "authorization": {"type": "Bearer", "credentials": token},
            }
        ],
    }
