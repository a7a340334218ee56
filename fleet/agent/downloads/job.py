"""The job: claim, check, fetch and verify every file, report the outcome."""

from __future__ import annotations

import errno
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet.agent.client import ServerClient, ServerRefused, ServerUnreachable
from fleet.agent.downloads.cache import HubCache, _fmt, disk_margin, free_bytes
from fleet.agent.downloads.progress import JobsApi, Progress, Reporter, _CountingFile
from fleet.agent.downloads.remote import RemoteFile, fetch, remote_file
from fleet.agent.downloads.spec import (
    Cancelled,
    DownloadError,
    DownloadSpec,
    FileSpec,
    LeaseLost,
    check_relative_path,
    matches,
)

log = logging.getLogger("fleet.agent")

FINISH_RETRY_S = 60.0


class Downloader:
    def __init__(
        self,
        spec: DownloadSpec,
        data_dir: Path,
        reporter: Reporter,
        progress: Progress,
        node_name: str = "this node",
    ) -> None:
        self.spec = spec
        self.cache = HubCache(data_dir, spec.repo_id)
        self.reporter = reporter
        self.progress = progress
        self.node_name = node_name

    def run(self) -> dict[str, Any]:
        spec = self.spec
        for f in spec.files:
            check_relative_path(f.path)
            self.cache.pointer(spec.commit, f.path)
            if not (f.sha256 or f.blob_id):
                raise DownloadError(
                    f"The catalog has no checksum for {f.path}; re-import the model.",
                    retryable=False,
                    code="no_checksum",
                )
        missing: list[FileSpec] = []
        verified: dict[str, str] = {}
        for f in spec.files:
            self.reporter.check()
            pointer = self.cache.pointer(spec.commit, f.path)
            ok, digest = matches(pointer, f) if pointer.exists() else (False, "")
            if ok:
                verified[f.path] = digest
                with self.progress.lock:
                    self.progress.done_before += f.size
                    self.progress.files_done += 1
            else:
                missing.append(f)
        if not missing:
            self.progress.note("every file is already present and verified")
        else:
            self.progress.note(
                f"{len(spec.files) - len(missing)} of {len(spec.files)} files already present; "
                f"fetching {len(missing)} from {spec.endpoint}"
            )
            self.check_disk(missing)
            for f in missing:
                verified[f.path] = self.fetch_file(f)
        self.cache.write_ref(spec.revision, spec.commit)
        with self.progress.lock:
            self.progress.stage = "done"
            self.progress.current_file = ""
        return {
            "files": [
                {"path": f.path, "size": f.size, "sha256": verified.get(f.path, f.sha256)}
                for f in spec.files
            ],
            "size": sum(f.size for f in spec.files),
            "bytes_transferred": self.progress.transferred,
            "verified_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "snapshot_dir": str(self.cache.repo / "snapshots" / spec.commit),
        }

    def check_disk(self, missing: list[FileSpec]) -> None:
        needed = 0
        for f in missing:
            partial = 0
            for etag in (f.sha256, f.blob_id):
                candidate = self.cache.incomplete(etag) if etag else None
                if candidate is not None and candidate.is_file():
                    partial = max(partial, candidate.stat().st_size)
            needed += max(0, f.size - partial)
        margin = disk_margin(needed)
        free = free_bytes(self.cache.root)
        if free < needed + margin:
            raise DownloadError(
                f"Not enough disk space on {self.node_name} for {self.spec.repo_id}: "
                f"{_fmt(needed)} to download plus {_fmt(margin)} headroom, but only "
                f"{_fmt(free)} free in {self.cache.root}. Free space there (or delete models "
                "from the node) and retry the job.",
                retryable=False,
                code="disk_space",
            )

    def fetch_file(self, f: FileSpec) -> str:
        spec = self.spec
        with self.progress.lock:
            self.progress.current_file = f.path
            self.progress.current_bytes = 0
            self.progress.stage = "downloading"
        remote = remote_file(spec, f.path)
        if remote.size and remote.size != f.size:
            raise DownloadError(
                f"{spec.endpoint} says {f.path} is {remote.size} bytes; the catalog says "
                f"{f.size}. The upstream file changed or the catalog is stale: re-import the "
                "model.",
                retryable=False,
                code="size_mismatch",
            )
        blob = self.cache.blob(remote.etag)
        pointer = self.cache.pointer(spec.commit, f.path)
        for attempt in (1, 2):
            if blob.exists():
                ok, digest = matches(blob, f)
                if ok:
                    self.cache.link(blob, pointer)
                    self._file_done(f)
                    return digest
                blob.unlink()
            fetched = self.download_blob(remote, f, blob)
            if fetched is not None:
                self.cache.link(blob, pointer)
                self._file_done(f)
                return fetched
            if attempt == 1:
                self.progress.note(f"{f.path}: checksum mismatch; downloading it once more")
        algo = "sha256" if f.sha256 else "git blob id"
        raise DownloadError(
            f"Checksum mismatch for {f.path}: the {algo} of the downloaded bytes differs from the "
            f"catalog's ({(f.sha256 or f.blob_id)[:16]}…) twice in a row. The source "
            f"({spec.endpoint}) serves corrupt data; nothing was marked present. Check the "
            "source (or the fleet store) and retry.",
            retryable=False,
            code="checksum_mismatch",
        )

    def _file_done(self, f: FileSpec) -> None:
        with self.progress.lock:
            self.progress.done_before += f.size
            self.progress.current_bytes = 0
            self.progress.files_done += 1

    def download_blob(self, remote: RemoteFile, f: FileSpec, blob: Path) -> str | None:
        """Fetch into ``<blob>.incomplete`` (resuming), verify, move in. None on mismatch."""
        incomplete = self.cache.incomplete(remote.etag)
        incomplete.parent.mkdir(parents=True, exist_ok=True)
        mode = "r+b" if incomplete.exists() else "w+b"
        try:
            with incomplete.open(mode) as handle:
                handle.seek(0, os.SEEK_END)
                have = handle.tell()
                if have:
                    self.progress.note(f"{f.path}: resuming at {have} of {f.size} bytes")
                target = _CountingFile(handle, self.progress, self.reporter)
                with self.progress.lock:
                    self.progress.current_bytes = have
                fetch(remote, target, f.size, self.spec, f.path, self.progress)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                size = incomplete.stat().st_size if incomplete.exists() else 0
                raise DownloadError(
                    f"The disk holding {self.cache.root} on {self.node_name} filled up while "
                    f"downloading {f.path} ({_fmt(size)} of {_fmt(f.size)}). The partial file is "
                    "kept: free space and retry the job to resume.",
                    retryable=False,
                    code="disk_full",
                ) from None
            raise
        with self.progress.lock:
            self.progress.stage = "verifying"
        ok, digest = matches(incomplete, f)
        if not ok:
            incomplete.unlink(missing_ok=True)
            return None
        os.chmod(incomplete, 0o644)
        os.replace(incomplete, blob)
        self.progress.note(f"{f.path}: verified ({digest[:12]}…)")
        with self.progress.lock:
            self.progress.stage = "downloading"
        return digest

    def clean_partials(self) -> None:
        """After a cancel: remove this job's partial files (complete files stay valid)."""
        if not self.cache.blobs.exists():
            return
        wanted = {f.sha256 for f in self.spec.files} | {f.blob_id for f in self.spec.files}
        wanted.discard("")
        for candidate in self.cache.blobs.glob("*.incomplete"):
            if candidate.name.removesuffix(".incomplete") in wanted:
                candidate.unlink(missing_ok=True)


def _finish(api: JobsApi, job_id: int, body: dict[str, Any]) -> None:
    """Report the outcome; keep trying for a while (the lease covers the gap)."""
    deadline = time.monotonic() + FINISH_RETRY_S
    delay = 0.5
    while True:
        try:
            api.finish(job_id, body)
            return
        except ServerRefused as refused:
            log.warning("job %s: finish refused: %s", job_id, refused.detail)
            return
        except ServerUnreachable as exc:
            if time.monotonic() > deadline:
                log.error("job %s: could not report the outcome: %s", job_id, exc)
                return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_job(
    job_id: int, client: ServerClient, data_dir: Path, server: str, node_name: str = "this node"
) -> str:
    """Claim, run and report one download job. Returns the outcome (or 'skipped')."""
    api = JobsApi(client)
    try:
        answer = api.claim(job_id)
    except ServerRefused as refused:
        log.info("job %s not claimed: %s", job_id, refused.detail)
        return "skipped"
    spec = DownloadSpec.from_claim(job_id, answer, server, client.credential)
    node_name = str(answer.get("node") or node_name)
    progress = Progress(spec.files)
    reporter = Reporter(api, job_id, progress, spec.progress_interval_s)
    downloader: Downloader | None = None
    reporter.start()
    body: dict[str, Any]
    try:
        downloader = Downloader(spec, data_dir, reporter, progress, node_name)
        result = downloader.run()
        body = {"outcome": "succeeded", "result": result}
    except Cancelled:
        if downloader is not None:
            downloader.clean_partials()
        body = {"outcome": "cancelled", "log": "stopped; partial files removed"}
    except LeaseLost:
        log.warning("job %s: lease lost; stopping without reporting", job_id)
        reporter.stop()
        return "lost"
    except DownloadError as exc:
        body = {
            "outcome": "failed",
            "error": exc.message,
            "retryable": exc.retryable,
            "code": exc.code,
        }
    except Exception as exc:  # a bug or an unexpected OS error: report it, retry may help
        log.exception("job %s failed", job_id)
        body = {
            "outcome": "failed",
            "error": f"Unexpected error on the node: {type(exc).__name__}: {exc}",
            "retryable": True,
            "code": "unexpected",
        }
    reporter.stop()
    body["progress"] = progress.snapshot()
    extra = progress.take_log()
    if extra:
        body["log"] = (extra + "\n" + body.get("log", "")).strip()
    _finish(api, job_id, body)
    return str(body["outcome"])
