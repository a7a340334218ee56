"""The control-side ``cache_variant`` job: upstream hub → fleet store, verified by sha256.

Runs in the control worker (``models_catalog.tasks.cache_variant``). Claims the row under a
lease held by this worker, then for each file of the variant that the store lacks: checks
the path, downloads it with :func:`models_catalog.hub.download` into
``<store>/incoming/<sha256>/`` (a partial file there is resumed with ``Range``, also by a
later job), and moves it into the store with :func:`store.ingest_file`, which checks size
and sha256. A mismatch is downloaded once more, then the job fails. Progress (bytes, rate,
ETA, current file) is written about twice a second; each write renews the lease and says
whether an operator asked to cancel.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from core import job_services
from core.errors import ServiceError
from core.jobs import Job
from core.services import reveal_secret
from fleet.agent.downloads import DownloadError, check_relative_path, disk_margin
from models_catalog import hub, store
from models_catalog.downloads import PROGRESS_INTERVAL_S, missing_from_store, variant_files
from models_catalog.models import ModelFile, Variant

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
DOWNLOAD_TRIES = 3  # per file, for dropped connections (each resumes the partial file)
LOCK_WAIT_S = 0.5


class Cancelled(Exception):
    pass


class LeaseLost(Exception):
    pass


class JobFailed(Exception):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def worker_id() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


def _fmt(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size} B"


class Reporter:
    """Progress for the row, written at most every PROGRESS_INTERVAL_S."""

    def __init__(self, job: Job, owner: str, total: int, files_total: int) -> None:
        self.job_id = job.pk
        self.owner = owner
        self.total = total
        self.files_total = files_total
        self.done_before = 0
        self.current = 0
        self.files_done = 0
        self.transferred = 0
        self.current_file = ""
        self.stage = "checking"
        self.last_sent = 0.0
        self.window: deque[tuple[float, int]] = deque(maxlen=50)
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        log.info("cache job %s: %s", self.job_id, line)
        self.lines.append(line)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        self.window.append((now, self.transferred))
        oldest = next((w for w in self.window if now - w[0] <= 5.0), self.window[0])
        elapsed = now - oldest[0]
        rate = (self.transferred - oldest[1]) / elapsed if elapsed > 0.2 else 0.0
        done = self.done_before + self.current
        remaining = max(0, self.total - done)
        return {
            "stage": self.stage,
            "bytes_done": done,
            "bytes_total": self.total,
            "bytes_transferred": self.transferred,
            "rate_bps": round(rate, 1),
            "eta_s": round(remaining / rate, 1) if rate > 0 else None,
            "current_file": self.current_file,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "percent": round(100.0 * done / self.total, 1) if self.total else 100.0,
        }

    def send(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_sent < PROGRESS_INTERVAL_S:
            return
        self.last_sent = now
        text, self.lines = "\n".join(self.lines), []
        answer = job_services.report_progress(
            self.job_id, self.owner, self.snapshot(), log_text=text
        )
        if not answer.keep_going:
            raise LeaseLost()
        if answer.cancel_requested:
            raise Cancelled()

    def file_progress(self, done: int, total: int | None) -> None:
        self.transferred += max(0, done - self.current)
        self.current = done
        self.send()


@contextlib.contextmanager
def _file_lock(path: Path, reporter: Reporter) -> Iterator[None]:
    """One fetch of a given blob at a time (two variants may share a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                reporter.stage = "waiting for another job fetching the same file"
                reporter.send()
                time.sleep(LOCK_WAIT_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _partial_bytes(f: ModelFile) -> int:
    folder = store.root() / "incoming" / f.sha256
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*.incomplete") if p.is_file())


def _check_files(files: list[ModelFile]) -> None:
    for f in files:
        try:
            check_relative_path(f.path)
        except DownloadError as exc:
            raise JobFailed(exc.message.replace("the data dir", "the fleet store")) from None
        if not _SHA256.match(f.sha256 or ""):
            raise JobFailed(
                f"The catalog has no sha256 for {f.path}, so it cannot be verified; sync or "
                "re-import the model."
            )


def _check_disk(missing: list[ModelFile]) -> None:
    needed = sum(max(0, f.size - _partial_bytes(f)) for f in missing)
    margin = disk_margin(needed)
    free = store.free_bytes()
    if free < needed + margin:
        raise JobFailed(
            f"Not enough disk space in the fleet store ({store.root()}): {_fmt(needed)} to "
            f"download plus {_fmt(margin)} headroom, but only {_fmt(free)} free. Free space "
            "there (or move FLEET_MODEL_STORE) and retry the job."
        )


def _fetch(model: Any, f: ModelFile, token: str | None, reporter: Reporter) -> None:
    """Download one file into the store; retries dropped transfers, then a bad checksum once."""
    folder = store.root() / "incoming" / f.sha256
    with _file_lock(store.root() / "incoming" / f"{f.sha256}.lock", reporter):
        if store.has_blob(f.sha256):
            return
        for check in (1, 2):
            reporter.stage = "downloading"
            reporter.current_file = f.path
            reporter.current = 0
            path: Path | None = None
            for attempt in range(1, DOWNLOAD_TRIES + 1):
                try:
                    path = hub.download(
                        model.repo_id,
                        model.commit_sha,
                        f.path,
                        folder,
                        reporter.file_progress,
                        token=token,
                        expected_size=f.size,
                    )
                    break
                except hub.HubError as exc:
                    if not exc.retryable or attempt == DOWNLOAD_TRIES:
                        raise
                    reporter.note(f"{f.path}: {exc.message} (try {attempt}); resuming")
                    time.sleep(0.5 * attempt)
            assert path is not None
            reporter.stage = "verifying"
            reporter.send(force=True)
            try:
                store.ingest_file(path, expected_sha256=f.sha256, expected_size=f.size)
            except store.StoreError as exc:
                path.unlink(missing_ok=True)
                if check == 2:
                    raise JobFailed(
                        f"Checksum mismatch for {f.path}: {exc}, twice in a row. The upstream "
                        "hub serves corrupt data (or the catalog is stale: sync the model); "
                        "nothing was stored."
                    ) from None
                reporter.note(f"{f.path}: checksum mismatch ({exc}); downloading it once more")
                continue
            reporter.note(f"{f.path}: stored and verified ({f.sha256[:12]}…)")
            shutil.rmtree(folder, ignore_errors=True)
            return


def run(job_id: int, owner: str | None = None) -> str:
    """Claim and run one cache job; returns the outcome ('skipped' when not claimable)."""
    owner = owner or worker_id()
    job = job_services.claim(job_id, owner)
    if job is None:
        return "skipped"
    variant = Variant.objects.select_related("model").filter(pk=job.target_id).first()
    if variant is None:
        job_services.finish(
            job_id, owner, outcome="failed", error=f"{job.target_name} was deleted meanwhile."
        )
        return "failed"
    model = variant.model
    files = variant_files(variant)
    reporter = Reporter(job, owner, sum(f.size for f in files), len(files))
    missing: list[ModelFile] = []
    try:
        _check_files(files)
        missing = missing_from_store(files)
        present = len(files) - len(missing)
        reporter.done_before = sum(f.size for f in files if f not in missing)
        reporter.files_done = present
        reporter.note(
            f"{present} of {len(files)} files already in the store; fetching {len(missing)} "
            f"from {settings.FLEET_HF_ENDPOINT}"
        )
        reporter.send(force=True)
        if missing:
            _check_disk(missing)
            try:
                token = reveal_secret(model.secret_name) if model.secret_name else None
            except ServiceError as exc:
                raise JobFailed(
                    f"{exc.message} Set the model's token secret to an existing secret."
                ) from None
            for f in missing:
                _fetch(model, f, token, reporter)
                reporter.done_before += f.size
                reporter.current = 0
                reporter.files_done += 1
        reporter.stage = "done"
        reporter.current_file = ""
        result = {
            "files": len(files),
            "fetched": len(missing),
            "size": sum(f.size for f in files),
            "bytes_transferred": reporter.transferred,
            "commit": model.commit_sha,
        }
        outcome = "succeeded"
        job_services.finish(
            job_id,
            owner,
            outcome=outcome,
            result=result,
            progress=reporter.snapshot(),
            log_text="\n".join(reporter.lines),
        )
    except Cancelled:
        for f in missing:
            shutil.rmtree(store.root() / "incoming" / f.sha256, ignore_errors=True)
        outcome = "cancelled"
        job_services.finish(
            job_id, owner, outcome=outcome, log_text="stopped; partial files removed"
        )
    except LeaseLost:
        log.warning("cache job %s: lease lost; stopping", job_id)
        return "lost"
    except (hub.HubError, JobFailed) as exc:
        outcome = "failed"
        job_services.finish(
            job_id,
            owner,
            outcome=outcome,
            error=exc.message,
            retryable=exc.retryable,
            progress=reporter.snapshot(),
            log_text="\n".join(reporter.lines),
        )
    except Exception as exc:  # a full disk, or a bug: settle the row instead of waiting
        outcome = "failed"
        disk_full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if disk_full:
            error = (
                f"The fleet store's disk ({store.root()}) filled up while downloading "
                f"{reporter.current_file}. The partial file is kept: free space and retry the "
                "job to resume."
            )
        else:
            log.exception("cache job %s failed", job_id)
            error = f"Unexpected error in the control worker: {type(exc).__name__}: {exc}"
        job_services.finish(
            job_id,
            owner,
            outcome=outcome,
            error=error,
            retryable=not disk_full,
            progress=reporter.snapshot(),
        )
    return outcome
