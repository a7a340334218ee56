"""What to fetch: the job's errors, the claim's file list, path and checksum checks."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fleet.agent.errors import AdapterError

HASH_CHUNK = 1024 * 1024
DEFAULT_PROGRESS_INTERVAL_S = 0.5
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


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
