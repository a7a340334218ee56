"""Progress by stage: fetch, convert, quantize each level, evaluate, upload.

Shaped like the downloads' :class:`~fleet.agent.downloads.Progress` (``lock``, ``note``,
``take_log``, ``snapshot``), so the same :class:`~fleet.agent.downloads.Reporter` thread posts
it, renews the lease and sees a cancel. The overall percentage counts finished steps plus the
fraction of the running step that its tool reports (a tool that reports nothing counts 0 until
it ends).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fleet.agent.downloads.progress import Progress as FetchProgress

log = logging.getLogger("fleet.agent")

# What one progress post may carry (the API takes 20,000 characters of log at most).
LOG_LINES_PER_POST = 60
LOG_LINE_CHARS = 300


class StageProgress:
    def __init__(self, steps: list[str]) -> None:
        self.lock = threading.Lock()
        self.steps = list(steps)
        self.done: set[str] = set()
        self.current = ""
        self.fraction = 0.0
        self.stage = "checking"
        self.current_file = ""
        self.fetch: FetchProgress | None = None
        self.started = time.monotonic()
        self.log_lines: list[str] = []
        self.skipped_lines = 0

    # --- log --------------------------------------------------------------------------------
    def note(self, line: str) -> None:
        log.info("%s", line)
        with self.lock:
            self.log_lines.append(line[:LOG_LINE_CHARS])
            if len(self.log_lines) > LOG_LINES_PER_POST:
                drop = len(self.log_lines) - LOG_LINES_PER_POST
                self.skipped_lines += drop
                del self.log_lines[:drop]

    def take_log(self) -> str:
        fetched = self.fetch.take_log() if self.fetch is not None else ""
        with self.lock:
            lines, self.log_lines = self.log_lines, []
            skipped, self.skipped_lines = self.skipped_lines, 0
        if skipped:
            lines.insert(0, f"(… {skipped} tool output lines not shown)")
        return "\n".join(x for x in (fetched, "\n".join(lines)) if x)

    # --- steps ------------------------------------------------------------------------------
    def begin(self, step: str, stage: str, current_file: str = "") -> None:
        with self.lock:
            if step not in self.steps:
                self.steps.append(step)
            self.current = step
            self.fraction = 0.0
            self.stage = stage
            self.current_file = current_file

    def advance(self, fraction: float) -> None:
        with self.lock:
            self.fraction = min(1.0, max(self.fraction, fraction))

    def finish_step(self, step: str) -> None:
        with self.lock:
            self.done.add(step)
            if self.current == step:
                self.current = ""
                self.fraction = 0.0

    def skip(self, *steps: str) -> None:
        with self.lock:
            self.done.update(steps)

    def snapshot(self) -> dict[str, Any]:
        fetch_fraction = None
        if self.fetch is not None and self.current == "fetch":
            snap = self.fetch.snapshot()
            fetch_fraction = (snap.get("percent") or 0.0) / 100.0
        with self.lock:
            total = len(self.steps) or 1
            running = self.fraction if fetch_fraction is None else fetch_fraction
            finished = len(self.done & set(self.steps))
            if self.current and self.current not in self.done:
                finished_float = finished + running
            else:
                finished_float = float(finished)
            percent = round(100.0 * finished_float / total, 1)
            elapsed = time.monotonic() - self.started
            eta = None
            if 2.0 < percent < 100.0:
                eta = round(elapsed * (100.0 - percent) / percent, 1)
            return {
                "stage": self.stage,
                "percent": percent,
                "current_file": self.current_file,
                "files_done": finished,
                "files_total": total,
                "eta_s": eta,
            }
