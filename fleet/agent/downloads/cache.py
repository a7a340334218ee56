"""The node's Hugging Face hub cache layout, and disk space checks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path, PurePosixPath

from fleet.agent.downloads.spec import DownloadError, _inside, repo_folder

_REVISION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
