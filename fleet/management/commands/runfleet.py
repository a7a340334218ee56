"""Run the embedded product: web (ASGI), Celery worker, Celery beat and the local node's agent.

Without a REDIS_URL it first starts a Valkey server (fleet/embedded_valkey.py) and hands its
URL to all of them, so they share one broker and one Channels layer as production's processes
do. Ctrl-C (SIGINT) or SIGTERM stops them all cleanly, Valkey last; if one of them dies, the
others are stopped too and the command exits non-zero, so a supervisor (systemd, a terminal)
sees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.broker import broker
from fleet.embedded_valkey import EmbeddedValkey, ValkeyUnavailable

STOP_TIMEOUT_S = 20


class Command(BaseCommand):
    help = "Run web, worker and beat in one process tree (the embedded mode)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument(
            "--no-local-node",
            action="store_true",
            help="do not run an agent that joins this machine as node 'local'",
        )
        parser.add_argument(
            "--no-valkey",
            action="store_true",
            help="without REDIS_URL, do not start Valkey: a file-system broker, and live "
            "updates reach browsers only from the web process",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        state = settings.STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        commands = {
            "web": [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                options["host"],
                "--port",
                str(options["port"]),
                "--log-level",
                "info",
                "--no-server-header",
            ],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "-Q",
                "control,celery",
                "--concurrency",
                str(options["concurrency"]),
                "-n",
                "control@%h",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "info",
                "-s",
                str(state / "celerybeat-schedule"),
            ],
        }
        stopping = False

        def request_stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        environ = dict(os.environ)
        valkey = None if settings.REDIS_URL or options["no_valkey"] else self.start_valkey()
        if valkey is not None:
            environ["REDIS_URL"] = valkey.url
        # the worker's benchmark runs reach the gateway this web process serves
        host = options["host"] if options["host"] not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104 - compared  # nosec B104
        host = f"[{host}]" if ":" in host else host
        environ.setdefault("FLEET_GATEWAY_URL", f"http://{host}:{options['port']}")
        if not options["no_local_node"]:
            self.say_if_no_docker()
            commands["agent"] = self.local_agent_command(
                options["host"], options["port"], broker(environ.get("REDIS_URL", ""), state)
            )

        children: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            # Own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
            children[name] = subprocess.Popen(command, start_new_session=True, env=environ)
            self.stdout.write(f"started {name} (pid {children[name].pid})")
        self.stdout.write(
            self.style.SUCCESS(
                f"SLM Fleet is running on http://{options['host']}:{options['port']}/ "
                "— press Ctrl-C to stop."
            )
        )
        self.stdout.flush()
        failed = None
        while not stopping:
            if (
                valkey is not None
                and valkey.process is not None
                and valkey.process.poll() is not None
            ):
                failed = (
                    f"valkey exited with status {valkey.process.returncode} "
                    f"({valkey.log_tail() or 'no log'}; full log: {valkey.log_path})"
                )
                break
            for name, child in list(children.items()):
                if child.poll() is None:
                    continue
                if name == "agent":  # the console stays up without its local node
                    self.stderr.write(
                        f"the local node's agent exited with status {child.returncode}; "
                        "web, worker and beat keep running (see its log lines above)"
                    )
                    del children[name]
                    continue
                failed = f"{name} exited with status {child.returncode}"
                stopping = True
                break
            time.sleep(0.3)
        self.stdout.write("stopping web, worker and beat…")
        self._stop_all(children)
        if valkey is not None:
            valkey.stop()
        if failed:
            raise CommandError(f"{failed}; everything was stopped. See its log lines above.")
        self.stdout.write("stopped.")

    def say_if_no_docker(self) -> None:
        """The local node runs replicas in Docker; without an engine, say how to get one."""
        problem = docker_problem()
        if problem:
            self.stderr.write(
                self.style.WARNING(
                    f"No Docker engine is reachable here ({problem}). The node 'local' joins "
                    "but cannot run replicas: install Docker (Debian or Ubuntu: apt-get install "
                    "docker.io; macOS or Windows: Docker Desktop), start it, and the node's next "
                    "heartbeat says so. The console's overview says the same."
                )
            )

    def start_valkey(self) -> EmbeddedValkey | None:
        valkey = EmbeddedValkey(settings.STATE_DIR / "valkey")
        try:
            valkey.start()
        except ValkeyUnavailable as exc:
            self.stderr.write(
                self.style.WARNING(
                    f"Valkey is not running ({exc}). Falling back to a file-system broker: "
                    "live updates from the worker, beat and agent will not reach browsers."
                )
            )
            return None
        assert valkey.process is not None
        self.stdout.write(f"started valkey (pid {valkey.process.pid}) on {valkey.socket_path}")
        return valkey

    def local_agent_command(
        self, host: str, port: int, agent_broker: tuple[str, dict[str, object]]
    ) -> list[str]:
        """The embedded mode's own node: an agent that joins this machine as ``local``.

        It is told the broker every time: its stored one may be from an earlier mode."""
        from datetime import timedelta

        from django.utils import timezone

        from core.change_context import ChangeContext
        from fleet import services
        from fleet.agent.state import STATE_FILE

        data_dir = settings.STATE_DIR / "agent"
        command = [
            sys.executable,
            "-m",
            "fleet.agent",
            "--server",
            f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",  # noqa: S104 - compared  # nosec B104
            "--name",
            "local",
            "--data-dir",
            str(data_dir),
            "--broker-url",
            agent_broker[0],
            "--broker-transport-options",
            json.dumps(agent_broker[1]),
        ]
        if not (data_dir / STATE_FILE).exists():
            _, key = services.create_join_token(
                ChangeContext.system(
                    "runfleet", reason="embedded mode: this machine joins as 'local'"
                ),
                name="embedded local node",
                max_uses=1,
                expires_at=timezone.now() + timedelta(minutes=30),
            )
            command += ["--join-token", key]
        return command

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, child in children.items():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {STOP_TIMEOUT_S} s; killing it")
                child.kill()
                child.wait()


def docker_problem() -> str:
    """Empty when the Docker engine answers (found as the agent finds it), else why not."""
    from fleet.agent.docker_driver import DockerDriver

    driver = DockerDriver(timeout=3)
    try:
        info = driver.engine_info()
    finally:
        driver.close()
    return "" if info.get("reachable") else str(info.get("error") or "no answer")[:200]
