"""Progress counters and the reporter thread that posts them (and sees cancel/lost lease)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import IO, Any

from fleet.agent.client import ServerClient, ServerRefused, ServerUnreachable
from fleet.agent.downloads.spec import Cancelled, FileSpec, LeaseLost

log = logging.getLogger("fleet.agent")


class Progress:
    """Counters shared by the download loop and the reporter thread."""

    def __init__(self, files: tuple[FileSpec, ...]) -> None:
        self.lock = threading.Lock()
        self.bytes_total = sum(f.size for f in files)
        self.files_total = len(files)
        self.done_before = 0  # bytes of files already complete
        self.current_bytes = 0  # bytes of the file being fetched (incl. resumed part)
        self.files_done = 0
        self.transferred = 0  # bytes received over the network in this attempt
        self.current_file = ""
        self.stage = "checking"
        self.window: deque[tuple[float, int]] = deque(maxlen=50)
        self.log_lines: list[str] = []

    def note(self, line: str) -> None:
        log.info("%s", line)
        with self.lock:
            self.log_lines.append(line)

    def take_log(self) -> str:
        with self.lock:
            lines, self.log_lines = self.log_lines, []
        return "\n".join(lines)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            self.window.append((now, self.transferred))
            done = self.done_before + self.current_bytes
            oldest = next((w for w in self.window if now - w[0] <= 5.0), self.window[0])
            elapsed = now - oldest[0]
            rate = (self.transferred - oldest[1]) / elapsed if elapsed > 0.2 else 0.0
            remaining = max(0, self.bytes_total - done)
            return {
                "stage": self.stage,
                "bytes_done": done,
                "bytes_total": self.bytes_total,
                "bytes_transferred": self.transferred,
                "rate_bps": round(rate, 1),
                "eta_s": round(remaining / rate, 1) if rate > 0 else None,
                "current_file": self.current_file,
                "files_done": self.files_done,
                "files_total": self.files_total,
                "percent": round(100.0 * done / self.bytes_total, 1) if self.bytes_total else 100.0,
            }


class JobsApi:
    """The agent's job endpoints (node credential)."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def claim(self, job_id: int) -> dict[str, Any]:
        return self.client._post(f"/api/v1/agent/jobs/{job_id}/claim/", {})

    def progress(self, job_id: int, progress: dict[str, Any], log_text: str) -> dict[str, Any]:
        return self.client._post(
            f"/api/v1/agent/jobs/{job_id}/progress/", {"progress": progress, "log": log_text}
        )

    def finish(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.client._post(f"/api/v1/agent/jobs/{job_id}/finish/", body)


class Reporter(threading.Thread):
    """Posts progress every interval; a reply may ask to stop (cancel) or say the job is gone."""

    def __init__(self, api: JobsApi, job_id: int, progress: Progress, interval: float) -> None:
        super().__init__(name=f"job-{job_id}-progress", daemon=True)
        self.api = api
        self.job_id = job_id
        self.progress = progress
        self.interval = interval
        self.stopping = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.send()

    def send(self) -> None:
        text = self.progress.take_log()
        try:
            answer = self.api.progress(self.job_id, self.progress.snapshot(), text)
        except ServerUnreachable as exc:  # keep going; the lease has some slack
            log.warning("job %s: progress not delivered: %s", self.job_id, exc)
            if text:
                with self.progress.lock:
                    self.progress.log_lines.insert(0, text)
            return
        except ServerRefused as refused:
            log.warning("job %s: progress refused: %s", self.job_id, refused.detail)
            self.lost.set()
            return
        if answer.get("cancel_requested"):
            self.cancel.set()
        if not answer.get("keep_going", True):
            self.lost.set()

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()
        if self.lost.is_set():
            raise LeaseLost()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)


class _CountingFile:
    """Wraps the partial file: counts bytes and stops the transfer on cancel or lost lease."""

    def __init__(self, handle: IO[bytes], progress: Progress, reporter: Reporter) -> None:
        self.handle = handle
        self.progress = progress
        self.reporter = reporter

    def write(self, data: bytes) -> int:
        self.reporter.check()
        written = self.handle.write(data)
        with self.progress.lock:
            self.progress.transferred += len(data)
            self.progress.current_bytes = self.handle.tell()
        return written

    def restart(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        with self.progress.lock:
            self.progress.current_bytes = 0
