"""The one adapter to the upstream model hub (Hugging Face or a compatible server).

Everything goes through ``huggingface_hub.HfApi(endpoint=settings.FLEET_HF_ENDPOINT)``;
every failure comes out as :class:`HubError`, which says whether retrying can help.
Tokens are passed in (the caller reveals them from the secrets store); ``token=False``
otherwise, so a token saved on the server by ``hf auth login`` is never used by accident.

Downloads (:func:`download`) stream ``GET /{repo}/resolve/{commit}/{path}`` and resume a
partial ``<name>.incomplete`` file with a ``Range`` request, reporting progress through a
callback; the caller verifies the sha256 (``store.ingest_file``). We do not use
``hf_hub_download`` there because it offers no byte-level progress callback and keeps its
own cache layout; the fleet store is content-addressed instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from django.conf import settings
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    NotASafetensorsRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from core.errors import ServiceError
from models_catalog.footprint import architecture_from_gguf
from models_catalog.gguf_meta import GGUFHeaderError, read_header

CHUNK = 1024 * 1024
TIMEOUT = 30.0
MAX_GGUF_HEADER = 64 * CHUNK
SEARCH_SORTS = ("downloads", "likes", "trending_score", "last_modified", "created_at")

ProgressCallback = Callable[[int, int | None], None]


class HubError(ServiceError):
    """The hub refused or could not answer. ``retryable``: trying again later can help."""

    def __init__(self, message: str, *, retryable: bool, code: str) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.status_code = 502 if retryable else 400


def gated_message(repo_id: str) -> str:
    return (
        f"{repo_id} is gated: accept its licence on huggingface.co and store a token with "
        "access as a secret, then import with that secret"
    )


@contextlib.contextmanager
def _translated(
    repo_id: str, *, revision: str | None = None, token: str | None = None
) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into HubError."""
    endpoint = settings.FLEET_HF_ENDPOINT
    try:
        yield
    except HubError:
        raise
    except GatedRepoError:
        raise HubError(gated_message(repo_id), retryable=False, code="gated") from None
    except RevisionNotFoundError:
        raise HubError(
            f"{repo_id} has no revision {revision!r}: name a branch, tag or commit that exists.",
            retryable=False,
            code="revision_not_found",
        ) from None
    except RepositoryNotFoundError:
        access = "the token given has no access to it" if token else "no token was given"
        raise HubError(
            f"{repo_id} was not found on {endpoint}: it does not exist, or it is private and "
            f"{access}. Check the name, or store a token that can read it as a secret and "
            "import with that secret.",
            retryable=False,
            code="repo_not_found",
        ) from None
    except RemoteEntryNotFoundError as exc:
        raise HubError(
            f"{repo_id}: a file is missing at {revision or 'the pinned commit'} ({exc}).",
            retryable=False,
            code="entry_not_found",
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise HubError(
                f"{endpoint} refused access to {repo_id} (HTTP {status}): the token is invalid "
                "or lacks permission. Store a valid token as a secret and use that secret.",
                retryable=False,
                code="unauthorized",
            ) from None
        retryable = status == 429 or status >= 500
        raise HubError(
            f"{endpoint} answered HTTP {status} for {repo_id}"
            + (": try again later." if retryable else f": {exc}"),
            retryable=retryable,
            code="unavailable" if retryable else "upstream_error",
        ) from None
    except (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError, TimeoutError) as exc:
        raise HubError(
            f"{endpoint} could not be reached ({exc.__class__.__name__}): try again later.",
            retryable=True,
            code="unavailable",
        ) from None


def client(token: str | None = None) -> HfApi:
    return HfApi(endpoint=settings.FLEET_HF_ENDPOINT, token=token or False)


def _headers(token: str | None) -> dict[str, str]:
    return dict(build_hf_headers(token=token or False))


def file_url(repo_id: str, commit: str, path: str) -> str:
    return hf_hub_url(repo_id, path, revision=commit, endpoint=settings.FLEET_HF_ENDPOINT)


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool


@dataclass
class ModelSnapshot:
    """One commit of a repository as the hub describes it."""

    repo_id: str
    commit_sha: str
    files: list[HubFile]
    config: dict[str, Any]
    licence: str = ""
    gated: bool = False
    private: bool = False
    tags: list[str] = field(default_factory=list)
    task: str = ""
    library: str = ""
    downloads: int | None = None
    safetensors_total: int | None = None
    safetensors_dtypes: dict[str, int] = field(default_factory=dict)
    gguf_total: int | None = None
    # Architecture facts read from a GGUF header (repositories without config.json).
    gguf_facts: dict[str, Any] = field(default_factory=dict)
    gguf_file_type: str = ""
    # Listing entries refused as unsafe file names (absolute, "..", backslashes).
    ignored_paths: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)


def safe_path(path: str) -> bool:
    """A relative path inside the repository: no absolute paths, '..', backslashes or NULs."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _licence(info: Any) -> str:
    card = info.card_data
    licence = str(getattr(card, "license", "") or "") if card is not None else ""
    name = str(getattr(card, "license_name", "") or "") if card is not None else ""
    if licence == "other" and name:
        return name
    if not licence:
        tags = [t for t in (info.tags or []) if str(t).startswith("license:")]
        licence = tags[0].split(":", 1)[1] if tags else ""
    return licence.lower()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_info(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | None = None,
    known_sha256: Mapping[str, str] | None = None,
) -> ModelSnapshot:
    """Describe ``repo_id`` at ``revision`` (default branch when None), pinned to its commit.

    Non-LFS files (config, tokenizer, …) are listed with only a git blob sha1, so they are
    downloaded and hashed; ``known_sha256`` maps blob ids already hashed to their sha256.
    """
    api = client(token)
    known = {blob: sha for blob, sha in (known_sha256 or {}).items() if blob and sha}
    with _translated(repo_id, revision=revision, token=token):
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=TIMEOUT)
        commit = info.sha or ""
        if len(commit) != 40:
            raise HubError(
                f"{settings.FLEET_HF_ENDPOINT} named no commit for {repo_id}.",
                retryable=False,
                code="upstream_error",
            )
        config: dict[str, Any] = {}
        files: list[HubFile] = []
        snapshot_ignored: list[str] = []
        with tempfile.TemporaryDirectory(prefix="fleet-hub-") as tmp:
            for sibling in info.siblings or []:
                if not safe_path(sibling.rfilename):
                    snapshot_ignored.append(sibling.rfilename)
                    continue
                lfs = sibling.lfs
                blob_id = sibling.blob_id or ""
                sha256 = lfs.sha256 if lfs else known.get(blob_id, "")
                local: Path | None = None
                if not sha256 or sibling.rfilename == "config.json":
                    local = Path(
                        api.hf_hub_download(
                            repo_id, sibling.rfilename, revision=commit, local_dir=tmp
                        )
                    )
                    sha256 = sha256 or _sha256_file(local)
                if sibling.rfilename == "config.json" and local is not None:
                    config = _json_object(local)
                size = lfs.size if lfs else sibling.size
                files.append(HubFile(sibling.rfilename, int(size or 0), sha256, blob_id, bool(lfs)))
        snapshot = ModelSnapshot(
            repo_id=repo_id,
            commit_sha=commit,
            files=sorted(files, key=lambda f: f.path),
            config=config,
            licence=_licence(info),
            gated=bool(info.gated),
            private=bool(info.private),
            tags=[str(t) for t in info.tags or []],
            task=info.pipeline_tag or "",
            library=info.library_name or "",
            downloads=info.downloads,
            ignored_paths=snapshot_ignored,
        )
        if info.safetensors:
            snapshot.safetensors_total = int(info.safetensors.total)
            snapshot.safetensors_dtypes = dict(info.safetensors.parameters)
        if info.gguf and info.gguf.get("total"):
            snapshot.gguf_total = int(info.gguf["total"])
        _fill_from_headers(api, snapshot, token)
    return snapshot


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fill_from_headers(api: HfApi, snapshot: ModelSnapshot, token: str | None) -> None:
    """Parameter counts the hub did not list: safetensors headers, else one GGUF header."""
    paths = [f.path for f in snapshot.files]
    if snapshot.safetensors_total is None and any(p.endswith(".safetensors") for p in paths):
        try:
            meta = api.get_safetensors_metadata(snapshot.repo_id, revision=snapshot.commit_sha)
        except (NotASafetensorsRepoError, SafetensorsParsingError):
            meta = None
        if meta is not None and meta.parameter_count:
            snapshot.safetensors_total = sum(meta.parameter_count.values())
            snapshot.safetensors_dtypes = {str(k): int(v) for k, v in meta.parameter_count.items()}
    ggufs = sorted(
        (f for f in snapshot.files if f.path.lower().endswith(".gguf")), key=lambda f: f.size
    )
    need_facts = not snapshot.config and ggufs
    if ggufs and (need_facts or snapshot.gguf_total is None):
        reader = RangeReader(file_url(snapshot.repo_id, snapshot.commit_sha, ggufs[0].path), token)
        try:
            header = read_header(reader.read)
        except GGUFHeaderError:
            return
        if snapshot.gguf_total is None and "-of-" not in ggufs[0].path:
            snapshot.gguf_total = header.parameter_count
        snapshot.gguf_facts = asdict(architecture_from_gguf(header.metadata, header.array_lengths))
        snapshot.gguf_file_type = header.file_type


class RangeReader:
    """A file on the hub read front to back with ``Range`` requests of ``chunk`` bytes."""

    def __init__(self, url: str, token: str | None, *, chunk: int = CHUNK) -> None:
        self.url = url
        self.headers = _headers(token)
        self.chunk = chunk
        self.position = 0
        self._buffer = b""
        self._buffer_start = 0
        self._eof = False

    def _fetch(self) -> None:
        if self.position >= MAX_GGUF_HEADER:
            raise GGUFHeaderError(f"the header is larger than {MAX_GGUF_HEADER} bytes")
        end = self.position + self.chunk - 1
        response = get_session().get(
            self.url,
            headers={**self.headers, "Range": f"bytes={self.position}-{end}"},
            follow_redirects=True,
            timeout=TIMEOUT,
        )
        if response.status_code == 416:
            self._buffer, self._eof = b"", True
            return
        hf_raise_for_status(response)
        data = response.content
        if response.status_code == 200:  # the server ignored Range: take our slice
            data = data[self.position : self.position + self.chunk]
        self._buffer, self._buffer_start = data, self.position
        self._eof = len(data) < self.chunk

    def read(self, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            offset = self.position - self._buffer_start
            if offset >= len(self._buffer) or offset < 0:
                if self._eof and offset >= 0:
                    break
                self._fetch()
                offset = 0
                if not self._buffer:
                    break
            piece = self._buffer[offset : offset + size]
            out += piece
            self.position += len(piece)
            size -= len(piece)
        return bytes(out)


def search(
    text: str = "",
    task: str = "",
    library: str = "",
    sort: str = "downloads",
    limit: int = 20,
    *,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """Models matching ``text`` (in the repo id), a task and a library, most downloaded first."""
    if sort not in SEARCH_SORTS:
        raise HubError(
            f"Cannot sort by {sort!r}; choose one of {', '.join(SEARCH_SORTS)}.",
            retryable=False,
            code="invalid",
        )
    with _translated(text or "search", token=token):
        models = client(token).list_models(
            search=text or None,
            pipeline_tag=task or None,
            filter=library or None,
            sort=sort,  # type: ignore[arg-type]
            limit=max(1, min(limit, 100)),
        )
        return [
            {
                "repo_id": m.id,
                "task": m.pipeline_tag or "",
                "library": m.library_name or "",
                "downloads": m.downloads,
                "likes": m.likes,
                "tags": [str(t) for t in m.tags or []],
                "gated": bool(m.gated) if m.gated is not None else None,
                "private": bool(m.private),
            }
            for m in models
        ]


def download(
    repo_id: str,
    commit: str,
    path: str,
    dest_dir: Path,
    progress_callback: ProgressCallback | None = None,
    *,
    token: str | None = None,
    expected_size: int | None = None,
) -> Path:
    """Fetch one file of ``commit`` to ``dest_dir/path``, resuming a partial download.

    Progress is reported as ``progress_callback(bytes_done, bytes_total)``; a size that
    differs from ``expected_size`` at the end raises a retryable HubError and discards the
    partial file. The caller checks the sha256.
    """
    target = Path(dest_dir) / path
    partial = target.with_name(target.name + ".incomplete")
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.exists() else 0
    if expected_size is not None and done > expected_size:
        partial.unlink()
        done = 0
    headers = _headers(token)
    if done:
        headers["Range"] = f"bytes={done}-"
    with (
        _translated(repo_id, revision=commit, token=token),
        get_session().stream(
            "GET",
            file_url(repo_id, commit, path),
            headers=headers,
            follow_redirects=True,
            timeout=TIMEOUT,
        ) as response,
    ):
        if response.status_code == 416 and expected_size == done:
            partial.replace(target)
            return target
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        if response.status_code != 206:
            done = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else expected_size
        with partial.open("ab" if done else "wb") as handle:
            # no chunk size: httpx then hands over what arrived, so a dropped connection
            # keeps every byte received and the next attempt resumes from there
            for chunk in response.iter_bytes():
                handle.write(chunk)
                done += len(chunk)
                if progress_callback is not None:
                    progress_callback(done, total)
    final = partial.stat().st_size
    if expected_size is not None and final != expected_size:
        partial.unlink(missing_ok=True)
        raise HubError(
            f"{repo_id}/{path}: got {final} bytes, expected {expected_size}; try again.",
            retryable=True,
            code="short_read",
        )
    partial.replace(target)
    return target
