"""Repositories of the test hub, read from a directory (layout in README.md).

``<root>/<org>/<name>/refs.json`` maps branch names to commits; ``commits/<sha>/`` holds the
files of each commit. Optional per repository: ``meta.json`` (downloads, likes, tags, …),
``commits.json`` (history, newest first), ``gated.json`` / ``private.json`` (``{"tokens": [...]}``)
and ``faults.json`` (corrupt bytes, dropped connections, hostile listing entries).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models_catalog.mirror import protocol
from tests.hubserver import metadata

ESCAPE_BYTES = b"this file came from a hostile listing entry\n"

_digests: dict[tuple[str, int, int], tuple[int, str, str]] = {}
_digests_lock = threading.Lock()


def digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1), cached by path, size and modification time."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    value = protocol.file_digests(path)
    with _digests_lock:
        _digests[key] = value
    return value


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


@dataclass(frozen=True)
class Denied:
    status: int
    code: str | None
    message: str


class HubRepo:
    def __init__(self, directory: Path, repo_id: str) -> None:
        self.directory = directory
        self.repo_id = repo_id

    # --- configuration files (read on every request, so tests may edit them live) ---
    def _json(self, name: str, default: Any) -> Any:
        return _read_json(self.directory / name, default)

    @property
    def branches(self) -> dict[str, str]:
        return dict(self._json("refs.json", {}))

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._json("meta.json", {}))

    @property
    def faults(self) -> dict[str, Any]:
        return dict(self._json("faults.json", {}))

    def _tokens(self, name: str) -> list[str] | None:
        data = self._json(name, None)
        return None if data is None else list(data.get("tokens", []))

    @property
    def gated(self) -> bool:
        return self._tokens("gated.json") is not None

    @property
    def private(self) -> bool:
        return self._tokens("private.json") is not None

    def visible_to(self, token: str | None) -> Denied | None:
        """Private repositories exist only for their tokens (401 without one, else 404)."""
        tokens = self._tokens("private.json")
        if tokens is None or (token is not None and token in tokens):
            return None
        status = 401 if token is None else 404
        return Denied(status, protocol.REPO_NOT_FOUND, f"Repository {self.repo_id} not found.")

    def readable_by(self, token: str | None) -> Denied | None:
        """File contents of gated repositories need an allowed token (401 without, 403 else)."""
        denied = self.visible_to(token)
        tokens = self._tokens("gated.json")
        if denied is not None or tokens is None or token in tokens:
            return denied
        if token is None:
            message = f"Access to model {self.repo_id} is restricted. You must be authenticated."
            return Denied(401, protocol.GATED_REPO, message)
        message = f"Access to model {self.repo_id} is restricted and you are not in the list."
        return Denied(403, protocol.GATED_REPO, message)

    # --- commits and files ---
    def resolve(self, revision: str | None) -> str | None:
        revision = revision or "main"
        sha = self.branches.get(revision, revision)
        exists = protocol.COMMIT_SHA.match(sha) and (self.directory / "commits" / sha).is_dir()
        return sha if exists else None

    def revisions(self) -> list[str]:
        return [*self.branches, *self.commit_dirs()]

    def commit_dirs(self) -> list[str]:
        commits = self.directory / "commits"
        return sorted(p.name for p in commits.iterdir()) if commits.is_dir() else []

    def source(self, sha: str, path: str) -> Path | None:
        """The real file behind a repository path; None for unsafe or unknown paths."""
        clean = protocol.clean_path(path)
        if clean is None or not protocol.COMMIT_SHA.match(sha):
            return None
        base = self.directory / "commits" / sha
        candidate = base.joinpath(*clean.split("/"))
        if candidate.is_symlink() or not candidate.is_file():
            return None
        return candidate

    def files(self, sha: str) -> list[protocol.RepoFile]:
        base = self.directory / "commits" / sha
        found = []
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            relative = path.relative_to(base).as_posix()
            size, sha256, blob_id = digests(path)
            found.append(
                protocol.RepoFile(relative, size, sha256, blob_id, protocol.is_lfs(relative, size))
            )
        for extra in self.faults.get("extra_siblings", []):
            size, sha256 = len(ESCAPE_BYTES), hashlib.sha256(ESCAPE_BYTES).hexdigest()
            found.append(
                protocol.RepoFile(extra, size, sha256, protocol.git_blob_sha1(ESCAPE_BYTES), False)
            )
        return found

    def history(self, sha: str) -> list[dict[str, Any]]:
        """Commits from ``sha`` back, as ``GET .../commits/{rev}`` lists them."""
        listed = self._json("commits.json", None)
        if listed is None:
            dirs = sorted(self.commit_dirs(), key=self._commit_time, reverse=True)
            listed = [{"id": c, "title": "Upload files", "date": self._date(c)} for c in dirs]
        ids = [entry["id"] for entry in listed]
        start = ids.index(sha) if sha in ids else 0
        return [
            protocol.commit(
                entry["id"],
                title=entry.get("title", "Upload files"),
                date=entry.get("date") or self._date(entry["id"]),
                author=entry.get("author", "fleet-test"),
                message=entry.get("message", ""),
            )
            for entry in listed[start:]
        ]

    def _commit_time(self, sha: str) -> float:
        path = self.directory / "commits" / sha
        return path.stat().st_mtime if path.exists() else 0.0

    def _date(self, sha: str) -> str:
        return protocol.timestamp(datetime.fromtimestamp(self._commit_time(sha), UTC))

    # --- model info ---
    def summary(self, sha: str) -> dict[str, Any]:
        """Fields shared by model info and search results."""
        base = self.directory / "commits" / sha
        card = metadata.front_matter(base / "README.md")
        config = metadata.config(base / "config.json")
        meta = self.meta
        history = self.history(sha)
        gguf_files = sorted(base.rglob("*.gguf"))
        library = card.get("library_name") or ("transformers" if config else None)
        library = library or ("gguf" if gguf_files else None)
        pipeline = card.get("pipeline_tag")
        if pipeline is None and any(
            a.endswith("ForCausalLM") for a in (config or {}).get("architectures", [])
        ):
            pipeline = "text-generation"
        tags = [*card.get("tags", []), *meta.get("tags", [])]
        tags += [
            t for t in (library, "safetensors" if any(base.rglob("*.safetensors")) else None) if t
        ]
        tags += ["gguf"] if gguf_files else []
        tags += [f"license:{card['license']}"] if card.get("license") else []
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "private": self.private,
            "gated": meta.get("gated_mode", "manual") if self.gated else False,
            "downloads": meta.get("downloads", 0),
            "likes": meta.get("likes", 0),
            "trendingScore": meta.get("trending_score", 0),
            "pipeline_tag": pipeline,
            "library_name": library,
            "tags": list(dict.fromkeys(tags)),
            "lastModified": meta.get("last_modified") or history[0]["date"],
            "createdAt": meta.get("created_at") or history[-1]["date"],
        }

    def info(self, sha: str, *, blobs: bool) -> dict[str, Any]:
        base = self.directory / "commits" / sha
        extra = self.summary(sha)
        extra["cardData"] = metadata.front_matter(base / "README.md")
        config = metadata.config(base / "config.json")
        if config is not None:
            extra["config"] = config
        weights = sorted(base.rglob("*.safetensors"))
        if weights:
            extra["safetensors"] = metadata.safetensors_parameters(weights)
        gguf_files = sorted(base.rglob("*.gguf"))
        if gguf_files:
            extra["gguf"] = metadata.gguf_summary(gguf_files[0])
        files = self.files(sha)
        extra["usedStorage"] = sum(file.size for file in files)
        return protocol.model_info(
            repo_id=self.repo_id, sha=sha, files=files, blobs=blobs, extra=extra
        )


class HubDirectory:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def repo(self, repo_id: str) -> HubRepo | None:
        if "/" not in repo_id or not protocol.valid_repo_id(repo_id):
            return None
        directory = self.root.joinpath(*repo_id.split("/"))
        return HubRepo(directory, repo_id) if (directory / "refs.json").is_file() else None

    def repos(self) -> list[HubRepo]:
        return [
            HubRepo(path.parent, path.parent.relative_to(self.root).as_posix())
            for path in sorted(self.root.glob("*/*/refs.json"))
        ]


# --- Building repositories (fixtures, benchmarks) ---------------------------------------------
def commit_sha(repo_id: str, index: int, files: Mapping[str, bytes | Path]) -> str:
    digest = hashlib.sha1(f"{repo_id}\0{index}".encode(), usedforsecurity=False)
    for path in sorted(files):
        content = files[path]
        digest.update(path.encode() + b"\0")
        digest.update(content if isinstance(content, bytes) else digests(content)[1].encode())
    return digest.hexdigest()


def add_repo(
    root: Path,
    repo_id: str,
    commits: Sequence[Mapping[str, bytes | Path]],
    *,
    branch: str = "main",
    **options: Any,
) -> list[str]:
    """Write a repository: one dict ``{path: bytes or source file}`` per commit, oldest first.

    The branch points at the last commit. ``options`` become JSON files next to refs.json:
    ``meta={...}``, ``gated={"tokens": [...]}``, ``private=...``, ``faults=...``.
    Returns the commit shas, oldest first.
    """
    directory = Path(root).joinpath(*repo_id.split("/"))
    shas: list[str] = []
    history: list[dict[str, str]] = []
    for index, files in enumerate(commits):
        sha = commit_sha(repo_id, index, files)
        base = directory / "commits" / sha
        for path, content in files.items():
            target = base.joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
        shas.append(sha)
        date = protocol.timestamp(datetime(2026, 1, 1 + index, 12, 0, tzinfo=UTC))
        history.insert(0, {"id": sha, "title": f"Commit {index + 1}", "date": date})
    (directory / "refs.json").write_text(json.dumps({branch: shas[-1]}))
    (directory / "commits.json").write_text(json.dumps(history))
    for name, value in options.items():
        (directory / f"{name}.json").write_text(json.dumps(value))
    return shas


def commits_of(root: Path, repo_id: str) -> list[str]:
    """The commit shas of a repository written by :func:`add_repo`, oldest first."""
    history = _read_json(Path(root).joinpath(*repo_id.split("/"), "commits.json"), [])
    return [entry["id"] for entry in reversed(history)]
