"""Deleting a variant from the node's hub cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from fleet.agent.downloads.cache import HubCache
from fleet.agent.downloads.spec import _SHA1, DownloadError, check_relative_path


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
