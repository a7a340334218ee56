"""Hub access: file metadata through huggingface_hub, the bytes with resumable GETs."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
import urllib3

from fleet.agent.downloads.progress import Progress, _CountingFile
from fleet.agent.downloads.spec import _SHA1, _SHA256, DownloadError, DownloadSpec

CHUNK = 256 * 1024
READ_TIMEOUT_S = 30
STREAM_RETRIES = 5  # dropped connections resumed with Range within one attempt


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
