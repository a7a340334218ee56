"""Run the embedded product: web (ASGI), Celery worker and Celery beat, supervised together.

Ctrl-C (SIGINT) or SIGTERM stops all three cleanly; if one of them dies, the others are
stopped too and the command exits non-zero, so a supervisor (systemd, a terminal) sees it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

STOP_TIMEOUT_S = 20


class Command(BaseCommand):
    help = "Run web, worker and beat in one process tree (the embedded mode)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")

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

        children: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            # Own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
            children[name] = subprocess.Popen(command, start_new_session=True)
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
            for name, child in children.items():
                if child.poll() is not None:
                    failed = f"{name} exited with status {child.returncode}"
                    stopping = True
                    break
            time.sleep(0.3)
        self.stdout.write("stopping web, worker and beat…")
        self._stop_all(children)
        if failed:
            raise CommandError(f"{failed}; everything was stopped. See its log lines above.")
        self.stdout.write("stopped.")

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
