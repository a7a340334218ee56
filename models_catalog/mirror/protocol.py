"""The Hugging Face Hub wire protocol as ``huggingface_hub`` 1.x/2.x speaks it.

Pure functions from file facts to JSON bodies and headers, shared by the fleet model mirror
(:mod:`models_catalog.mirror.views`) and the test upstream hub (``tests/hubserver``). No Django
here, so the test hub runs as a plain ASGI app.

What the client reads (huggingface_hub ``file_download.py``, ``hf_api.py``, ``utils/_http.py``):
- ``HEAD /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (sha256 for LFS files, the
  git blob sha1 otherwise; it names the cache blob), ``Content-Length`` (or ``X-Linked-Size``).
- errors: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
  ``GatedRepo``), ``X-Error-Message`` and a JSON ``{"error": ...}`` body.
- tree listings are paginated with a ``Link: <url>; rel="next"`` header.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

CHUNK = 1024 * 1024
TREE_PAGE = 1000  # the Hub's page size; 50 when expand=true
TREE_PAGE_EXPANDED = 50
LFS_THRESHOLD = 10 * 1024 * 1024
LFS_EXTENSIONS = (".safetensors", ".gguf", ".bin", ".onnx", ".pt", ".pth", ".h5", ".msgpack")

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

REPO_NOT_FOUND = "RepoNotFound"
REVISION_NOT_FOUND = "RevisionNotFound"
ENTRY_NOT_FOUND = "EntryNotFound"
GATED_REPO = "GatedRepo"
# huggingface_hub maps a 401 with exactly this message to a plain HTTP error (a bad token),
# not to "repository not found".
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository at one commit."""

    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


# --- Validation -------------------------------------------------------------------------------
def valid_repo_id(repo_id: str) -> bool:
    """``org/name`` (or a legacy ``name``) with the Hub's characters; no ``..``."""
    parts = repo_id.split("/")
    return (
        1 <= len(parts) <= 2
        and all(_REPO_PART.match(part) for part in parts)
        and ".." not in repo_id
        and "--" not in repo_id
    )


def clean_path(path: str) -> str | None:
    """A safe relative file path inside a repository, or None (absolute, ``..``, NUL, …)."""
    if not path or len(path) > 1000 or path.startswith("/") or "\\" in path:
        return None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        return None
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    return path


def split_revision(rest: str, revisions: Iterable[str]) -> tuple[str, str]:
    """Split ``{revision}/{path}`` where the revision may itself hold slashes (``refs/pr/1``).

    The client percent-encodes slashes in revisions, but servers see the decoded path, so the
    longest known revision that prefixes ``rest`` wins; otherwise the first segment is it.
    """
    for revision in sorted(revisions, key=len, reverse=True):
        if revision and (rest == revision or rest.startswith(revision + "/")):
            return revision, rest[len(revision) + 1 :]
    revision, _, path = rest.partition("/")
    return revision, path


def timestamp(moment: datetime) -> str:
    """The Hub's date format (``2024-11-16T00:27:02.000Z``); the client parses no other."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- Digests ----------------------------------------------------------------------------------
def is_lfs(path: str, size: int) -> bool:
    """The Hub's default ``.gitattributes``: weight formats and large files go to LFS."""
    return size >= LFS_THRESHOLD or path.lower().endswith(LFS_EXTENSIONS)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def file_digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) of a file, read once."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return size, sha256.hexdigest(), sha1.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file the repository holds in place of an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


# --- JSON bodies ------------------------------------------------------------------------------
def _lfs(file: RepoFile, sha_key: str) -> dict[str, Any]:
    return {
        sha_key: file.sha256,
        "size": file.size,
        "pointerSize": len(lfs_pointer(file.sha256, file.size)),
    }


def sibling(file: RepoFile, *, blobs: bool) -> dict[str, Any]:
    """A ``siblings[]`` entry of model info; sizes and hashes only with ``?blobs=true``."""
    entry: dict[str, Any] = {"rfilename": file.path}
    if blobs:
        entry["size"] = file.size
        entry["blobId"] = file.blob_id
        if file.lfs:
            entry["lfs"] = _lfs(file, "sha256")
    return entry


def file_entry(file: RepoFile, last_commit: dict[str, str] | None = None) -> dict[str, Any]:
    """A tree / paths-info entry for a file (``lastCommit`` only when ``expand=true``)."""
    entry: dict[str, Any] = {
        "type": "file",
        "oid": file.blob_id,
        "size": file.size,
        "path": file.path,
    }
    if file.lfs:
        entry["lfs"] = _lfs(file, "oid")
    if last_commit:
        entry["lastCommit"] = last_commit
    return entry


def _directory_entry(
    path: str, children: list[RepoFile], last_commit: dict[str, str] | None = None
) -> dict[str, Any]:
    digest = hashlib.sha1(usedforsecurity=False)
    for child in children:
        digest.update(f"{child.path}\0{child.blob_id}\n".encode())
    entry = {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": path}
    return {**entry, "lastCommit": last_commit} if last_commit else entry


def tree(
    files: Iterable[RepoFile],
    under: str,
    *,
    recursive: bool,
    last_commit: dict[str, str] | None = None,
) -> list[dict[str, Any]] | None:
    """Entries below directory ``under`` ("" = root), directories included; None if absent."""
    prefix = f"{under}/" if under else ""
    inside = [file for file in files if file.path.startswith(prefix)]
    if under and not inside:
        return None
    directories: dict[str, list[RepoFile]] = {}
    entries: list[dict[str, Any]] = []
    for file in inside:
        parts = file.path[len(prefix) :].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        for level in range(1, depth + 1):
            directories.setdefault(prefix + "/".join(parts[:level]), []).append(file)
        if recursive or len(parts) == 1:
            entries.append(file_entry(file, last_commit))
    entries += [_directory_entry(path, kids, last_commit) for path, kids in directories.items()]
    return sorted(entries, key=lambda entry: entry["path"])


def paths_info(
    files: Iterable[RepoFile], paths: Iterable[str], last_commit: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Entries for the asked paths that exist (files or directories); the rest are left out."""
    files = list(files)
    by_path = {file.path: file for file in files}
    found: list[dict[str, Any]] = []
    for path in dict.fromkeys(paths):
        if path in by_path:
            found.append(file_entry(by_path[path], last_commit))
        elif path and (kids := [f for f in files if f.path.startswith(path + "/")]):
            found.append(_directory_entry(path, kids, last_commit))
    return found


def page(entries: list[dict[str, Any]], cursor: str | None, limit: int) -> tuple[list, str | None]:
    """One page of a listing and the cursor of the next one (None on the last page)."""
    try:
        start = int(base64.urlsafe_b64decode((cursor or "").encode()).decode() or 0)
    except ValueError:
        start = 0
    stop = start + limit
    following = base64.urlsafe_b64encode(str(stop).encode()).decode()
    return entries[start:stop], following if stop < len(entries) else None


def model_info(
    *,
    repo_id: str,
    sha: str,
    files: Iterable[RepoFile],
    blobs: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``GET /api/models/{repo_id}[/revision/{rev}]``."""
    body: dict[str, Any] = {
        "_id": hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0] if "/" in repo_id else None,
        "sha": sha,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [sibling(file, blobs=blobs) for file in files],
    }
    body.update(extra or {})
    return body


def refs(branches: dict[str, str], *, include_prs: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "branches": [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in branches.items()
        ],
        "converts": [],
        "tags": [],
    }
    if include_prs:
        body["pullRequests"] = []
    return body


def commit(sha: str, *, title: str, date: str, author: str, message: str = "") -> dict[str, Any]:
    """One ``GET .../commits/{rev}`` entry (``authors[].user`` is required by the client)."""
    return {
        "id": sha,
        "title": title,
        "message": message,
        "authors": [{"user": author, "avatar": None}],
        "date": date,
    }


def error(code: str | None, message: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and JSON body of an error; the message must be plain ASCII for the header."""
    headers = {"X-Error-Message": message.encode("ascii", "replace").decode()}
    if code:
        headers["X-Error-Code"] = code
    return headers, {"error": message}


# --- Files ------------------------------------------------------------------------------------
def file_headers(commit_sha: str, file: RepoFile) -> dict[str, str]:
    """Metadata headers of a resolve answer (HEAD and GET)."""
    headers = {
        "X-Repo-Commit": commit_sha,
        "ETag": f'"{file.etag}"',
        "Content-Length": str(file.size),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'inline; filename="{_ascii_name(file.path)}"',
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if file.lfs:
        headers["X-Linked-Etag"] = f'"{file.sha256}"'
        headers["X-Linked-Size"] = str(file.size)
    return headers


def _ascii_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "".join(char if 0x20 <= ord(char) < 0x7F and char not in '"\\' else "_" for char in name)


class ByteRange(NamedTuple):
    start: int
    stop: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class Unsatisfiable(Exception):
    """The asked range lies outside the file: answer 416 with ``Content-Range: bytes */size``."""


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(
    header: str | None, size: int, *, if_range: str | None = None, etag: str = ""
) -> ByteRange | None:
    """The single byte range asked for, or None to send the whole file.

    Malformed and multi-range headers are ignored (RFC 9110 lets a server do so), as is a range
    whose ``If-Range`` names another version. Raises :class:`Unsatisfiable` past the end.
    """
    if not header or (if_range and if_range.strip() not in (etag, f'"{etag}"')):
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: the last N bytes
        length = int(match[2])
        if length == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(size - length, 0), size)
    start = int(match[1])
    stop = int(match[2]) + 1 if match[2] else size
    if match[2] and stop <= start:
        return None  # last < first: syntactically invalid, ignore
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(stop, size))


def read_chunks(path: Path, start: int, stop: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes ``[start, stop)`` of a file, in chunks (a WSGI server streams them)."""
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = stop - start
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


async def aread_chunks(
    path: Path, start: int, stop: int, chunk: int = CHUNK
) -> AsyncIterator[bytes]:
    """Same, for an ASGI server: each read runs in a thread so the event loop never blocks."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        remaining = stop - start
        await asyncio.to_thread(handle.seek, start)
        while remaining > 0:
            data = await asyncio.to_thread(handle.read, min(chunk, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
    finally:
        await asyncio.to_thread(handle.close)
