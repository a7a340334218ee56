"""Download jobs on the node: a catalog variant into the node's Hugging Face hub cache.

Runs inside the agent's Celery worker; no Django. The control plane's row is the record:
the agent claims the job over the API (the answer describes what to fetch), reports
progress about twice a second (each answer renews the lease and says whether to stop),
and reports the outcome. A duplicate or late message finds the job unclaimable and returns.

Layout: ``<data_dir>/hub`` is a standard hub cache (``models--org--name/blobs/<etag>``,
``snapshots/<commit>/<path>`` symlinks, ``refs/<revision>``), so runtimes can mount it and
``huggingface_hub`` finds the files offline. Metadata comes from ``huggingface_hub``'s
``get_hf_file_metadata`` (same endpoints, headers and error types as ``hf_hub_download``);
the bytes are fetched here, because ``huggingface_hub`` 2.x writes to a process-unique
temporary file and deletes it on failure, so it cannot resume after an agent restart. Here
the partial file is ``blobs/<etag>.incomplete``, kept across crashes and resumed with a
``Range`` request.

Every file is checked: paths from the catalog must stay inside the cache (no ``..``, no
absolute paths, no NUL), the disk must hold what is missing before anything is written,
and each file's sha256 must match the catalog's (a mismatch is downloaded once more, then
the job fails and nothing is marked present).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import requests
import urllib3

from fleet.agent.client import ServerClient, ServerRefused, ServerUnreachable
from fleet.agent.errors import AdapterError

log = logging.getLogger("fleet.agent")

CHUNK = 256 * 1024
READ_TIMEOUT_S = 30
STREAM_RETRIES = 5  # dropped connections resumed with Range within one attempt
HASH_CHUNK = 1024 * 1024
DEFAULT_PROGRESS_INTERVAL_S = 0.5
FINISH_RETRY_S = 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_REVISION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class DownloadError(AdapterError):
    """A download cannot go on; ``code`` names the case for the control plane and tests."""

    def __init__(self, message: str, *, retryable: bool, code: str) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


class Cancelled(Exception):
    """The operator cancelled the job (seen in a progress answer)."""


class LeaseLost(Exception):
    """The control plane gave the job to someone else (or finished it): stop quietly."""


# --- What to fetch --------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    path: str
    size: int
    sha256: str = ""
    blob_id: str = ""


@dataclass(frozen=True)
class DownloadSpec:
    job_id: int
    repo_id: str
    commit: str
    revision: str
    endpoint: str
    token: str | None
    source: str
    files: tuple[FileSpec, ...]
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S

    @classmethod
    def from_claim(
        cls, job_id: int, answer: dict[str, Any], server: str, credential: str | None = None
    ) -> DownloadSpec:
        """The claim answer; the mirror (no endpoint given) takes the node credential."""
        source = str(answer.get("source") or "mirror")
        endpoint = answer.get("endpoint") or f"{server.rstrip('/')}/hub"
        token = answer.get("token") or (credential if not answer.get("endpoint") else None)
        files = tuple(
            FileSpec(
                path=str(f["path"]),
                size=int(f["size"]),
                sha256=str(f.get("sha256") or "").lower(),
                blob_id=str(f.get("blob_id") or "").lower(),
            )
            for f in answer.get("files") or []
        )
        return cls(
            job_id=job_id,
            repo_id=str(answer["repo_id"]),
            commit=str(answer["commit"]),
            revision=str(answer.get("revision") or ""),
            endpoint=str(endpoint).rstrip("/"),
            token=token,
            source=source,
            files=files,
            progress_interval_s=float(
                answer.get("progress_interval_s") or DEFAULT_PROGRESS_INTERVAL_S
            ),
        )


def check_relative_path(path: str) -> PurePosixPath:
    """A file path from a listing, refused unless it is a plain relative path."""
    if not path or "\x00" in path:
        raise DownloadError(
            f"The file list holds an empty name or one with a NUL byte ({path!r}); refusing "
            "to write it. The upstream repository listing is malformed.",
            retryable=False,
            code="unsafe_path",
        )
    if "\\" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise DownloadError(
            f"The file list holds an absolute path ({path!r}); refusing to write outside the "
            "data dir. Nothing was written. Check the upstream repository.",
            retryable=False,
            code="unsafe_path",
        )
    parts = PurePosixPath(path).parts
    if any(part in ("..", ".", "") for part in path.split("/")) or not parts:
        raise DownloadError(
            f"The file list holds a path with '..' or '.' ({path!r}); refusing to write "
            "outside the data dir. Nothing was written. Check the upstream repository.",
            retryable=False,
            code="unsafe_path",
        )
    return PurePosixPath(path)


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise DownloadError(
            f"{repo_id!r} is not a valid repository id.", retryable=False, code="bad_repo_id"
        )
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def _inside(base: Path, candidate: Path) -> bool:
    base_abs = Path(os.path.abspath(base))
    return Path(os.path.abspath(candidate)).is_relative_to(base_abs)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    if algorithm == "sha1":  # git blob id: sha1 of "blob <size>\0" + content
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def matches(path: Path, spec: FileSpec) -> tuple[bool, str]:
    """Whether ``path`` holds exactly the catalog's file; also returns what was computed."""
    if not path.is_file() or path.stat().st_size != spec.size:
        return False, ""
    if spec.sha256:
        actual = file_digest(path, "sha256")
        return actual == spec.sha256, actual
    actual = file_digest(path, "sha1")
    return actual == spec.blob_id, actual


# --- Progress -------------------------------------------------------------------------------
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


# --- Hub access -----------------------------------------------------------------------------
def _error(kind: str, spec: DownloadSpec, path: str, status: int = 0) -> DownloadError:
    """A message a person can act on, per kind of hub failure."""
    mirror = spec.source == "mirror"
    where = "the fleet mirror" if mirror else spec.endpoint
    if kind == "gated":
        return DownloadError(
            f"{spec.repo_id} is gated at {where}: the token in use has not been granted access. "
            "Accept the model's terms on the hub with the token's account, set the model's "
            "token secret, and retry.",
            retryable=False,
            code="gated",
        )
    if kind == "repo_not_found":
        return DownloadError(
            f"Repository {spec.repo_id} was not found at {where} (it does not exist, or it is "
            "private and the token cannot see it)."
            + (
                " The mirror serves only models in the catalog whose files are in the fleet "
                "store: cache the variant first, or check that this node's credential is valid."
                if mirror
                else " Set a token secret with access on the model and retry."
            ),
            retryable=False,
            code="repo_not_found",
        )
    if kind == "revision_not_found":
        return DownloadError(
            f"Revision {spec.commit} of {spec.repo_id} was not found at {where}. Sync or "
            "re-import the model in the catalog.",
            retryable=False,
            code="revision_not_found",
        )
    if kind == "file_not_found":
        return DownloadError(
            f"File {path} of {spec.repo_id}@{spec.commit[:12]} was not found at {where}."
            + (" Cache the variant in the fleet store again and retry." if mirror else ""),
            retryable=False,
            code="file_not_found",
        )
    if kind == "forbidden":
        return DownloadError(
            f"{where} refused access to {spec.repo_id} ({status}). "
            + (
                "Check that this node's credential is still valid (rejoin if it was deleted)."
                if mirror
                else "Set a token secret with access on the model and retry."
            ),
            retryable=False,
            code="forbidden",
        )
    retryable = status == 0 or status >= 500 or status in (408, 429)
    if status:
        message = f"{where} answered {status} for {path}"
    else:
        message = f"Network error talking to {where} while fetching {path}"
    return DownloadError(
        message + ("; the job retries later." if retryable else "."),
        retryable=retryable,
        code="network" if status == 0 else "http_error",
    )


_ERROR_CODES = {
    "GatedRepo": "gated",
    "RepoNotFound": "repo_not_found",
    "RevisionNotFound": "revision_not_found",
    "EntryNotFound": "file_not_found",
}


def _hub_error(exc: Exception, spec: DownloadSpec, path: str) -> DownloadError:
    """huggingface_hub's errors (from the metadata request) as a DownloadError."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return _error("gated", spec, path)
    if isinstance(exc, RepositoryNotFoundError):
        return _error("repo_not_found", spec, path)
    if isinstance(exc, RevisionNotFoundError):
        return _error("revision_not_found", spec, path)
    if isinstance(exc, EntryNotFoundError):
        return _error("file_not_found", spec, path)
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return _error("forbidden" if status in (401, 403) else "http", spec, path, status)
    error = _error("network", spec, path)
    error.message = f"{error.message} ({type(exc).__name__}: {exc})"
    error.args = (error.message,)
    return error


@dataclass
class RemoteFile:
    url: str
    etag: str
    size: int
    commit: str | None
    headers: dict[str, str] = field(default_factory=dict)


def remote_file(spec: DownloadSpec, path: str) -> RemoteFile:
    """HEAD the file through huggingface_hub: etag (blob name), size, download location."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(spec.repo_id, path, revision=spec.commit, endpoint=spec.endpoint)
    try:
        meta = get_hf_file_metadata(url, token=spec.token or False, endpoint=spec.endpoint)
    except Exception as exc:
        raise _hub_error(exc, spec, path) from None
    etag = (meta.etag or "").lower()
    if not (_SHA256.match(etag) or _SHA1.match(etag)):
        raise DownloadError(
            f"The hub answered an unusable ETag {meta.etag!r} for {path}; refusing to use it "
            "as a file name.",
            retryable=False,
            code="bad_etag",
        )
    headers = build_hf_headers(token=spec.token or False)
    return RemoteFile(
        url=meta.location,
        etag=etag,
        size=int(meta.size or 0),
        commit=meta.commit_hash,
        headers=dict(headers),
    )


def fetch(
    remote: RemoteFile,
    target: _CountingFile,
    expected_size: int,
    spec: DownloadSpec,
    path: str,
    progress: Progress,
) -> None:
    """GET into ``target`` from its current end, resuming with Range after drops."""
    attempts = 0
    while True:
        have = target.handle.tell()
        if have >= expected_size:
            if have > expected_size:  # a longer partial cannot be right
                target.restart()
                continue
            return
        headers = dict(remote.headers)
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with requests.get(
                remote.url, headers=headers, stream=True, timeout=(10, READ_TIMEOUT_S)
            ) as response:
                if response.status_code == 416:
                    target.restart()
                    continue
                if response.status_code >= 400:
                    raise _http_status_error(response, spec, path)
                if have and response.status_code == 200:
                    progress.note(f"{path}: server ignored the Range request; starting over")
                    target.restart()
                for chunk in _chunks(response):
                    target.write(chunk)
            if target.handle.tell() >= expected_size:
                continue
            raise requests.exceptions.ChunkedEncodingError("connection closed early")
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
        ) as exc:
            attempts += 1
            if attempts > STREAM_RETRIES:
                raise DownloadError(
                    f"The connection kept dropping while downloading {path} "
                    f"({target.handle.tell()} of {expected_size} bytes); the partial file is "
                    f"kept and the job retries later. Last error: {exc}",
                    retryable=True,
                    code="network",
                ) from None
            progress.note(f"{path}: connection dropped at {target.handle.tell()} bytes; resuming")
            time.sleep(min(5.0, 0.5 * attempts))


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives (``read1``): what reached us is on disk if we are killed."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from (chunk for chunk in response.iter_content(CHUNK) if chunk)
        return
    while chunk := read1(CHUNK):
        yield chunk


def _http_status_error(response: requests.Response, spec: DownloadSpec, path: str) -> Exception:
    kind = _ERROR_CODES.get(response.headers.get("X-Error-Code", ""))
    status = response.status_code
    if kind is None:
        kind = "forbidden" if status in (401, 403) else "http"
    return _error(kind, spec, path, status)


# --- The cache ------------------------------------------------------------------------------
class HubCache:
    """The node's hub cache for one repository."""

    def __init__(self, data_dir: Path, repo_id: str) -> None:
        self.root = (data_dir / "hub").resolve()
        self.repo = repo_folder(self.root, repo_id)
        self.blobs = self.repo / "blobs"

    def pointer(self, commit: str, path: str) -> Path:
        pointer = self.repo / "snapshots" / commit / Path(*PurePosixPath(path).parts)
        if not _inside(self.repo / "snapshots" / commit, pointer):
            raise DownloadError(
                f"{path!r} would land outside the snapshot folder; refusing.",
                retryable=False,
                code="unsafe_path",
            )
        return pointer

    def blob(self, etag: str) -> Path:
        return self.blobs / etag

    def incomplete(self, etag: str) -> Path:
        return self.blobs / f"{etag}.incomplete"

    def link(self, blob: Path, pointer: Path) -> None:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            pointer.unlink()
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)

    def write_ref(self, revision: str, commit: str) -> None:
        if not revision or revision == commit or not _REVISION_NAME.match(revision):
            return
        ref = self.repo / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{revision}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def disk_margin(needed: int) -> int:
    """Room kept free besides the files: 1 MiB plus 1 % of what is downloaded."""
    return 1024 * 1024 + needed // 100


def _fmt(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size} B"


# --- The job --------------------------------------------------------------------------------
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


# --- Deleting a variant from the node --------------------------------------------------------
def delete_files(data_dir: Path, repo_id: str, commit: str, paths: list[str]) -> dict[str, Any]:
    """Remove a variant's snapshot entries and blobs no other snapshot still points to."""
    if not _SHA1.match(commit):
        raise DownloadError(f"{commit!r} is not a commit sha.", retryable=False, code="bad_commit")
    cache = HubCache(data_dir, repo_id)
    removed_files = 0
    for path in paths:
        check_relative_path(path)
        pointer = cache.pointer(commit, path)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
            removed_files += 1
    freed = 0
    if cache.repo.exists():
        snapshots = cache.repo / "snapshots"
        # prune empty folders under the snapshot
        if snapshots.exists():
            for folder in sorted(snapshots.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                    folder.rmdir()
        referenced = set()
        if snapshots.exists():
            for link in snapshots.rglob("*"):
                if link.is_symlink():
                    referenced.add(os.path.realpath(link))
        if cache.blobs.exists():
            for blob in cache.blobs.iterdir():
                if blob.name.endswith(".incomplete"):
                    continue
                if os.path.realpath(blob) not in referenced:
                    freed += blob.stat().st_size
                    blob.unlink()
        if snapshots.exists() and not any(snapshots.iterdir()):
            shutil.rmtree(cache.repo, ignore_errors=True)
    return {"removed_files": removed_files, "freed_bytes": freed}
