"""The fleet's content-addressed model store: ``<FLEET_MODEL_STORE>/blobs/sha256/ab/<sha256>``.

Files enter only through :func:`ingest_file`, which checks the sha256 and moves the file in
atomically, so a half-written or corrupt file is never visible under its hash.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from django.conf import settings

from models_catalog.models import StoredBlob

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class StoreError(Exception):
    """A file could not enter the store (bad hash, wrong size, disk)."""


def root() -> Path:
    return Path(settings.FLEET_MODEL_STORE)


def blob_path(sha256: str) -> Path:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return root() / "blobs" / "sha256" / sha256[:2] / sha256


def incoming_dir() -> Path:
    path = root() / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def has_blob(sha256: str) -> bool:
    return StoredBlob.objects.filter(sha256=sha256).exists() and blob_path(sha256).is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_file(
    path: Path, *, expected_sha256: str, expected_size: int | None = None
) -> StoredBlob:
    """Verify ``path`` and move it into the store under its hash (idempotent)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise StoreError(f"size {size} differs from the expected {expected_size} bytes")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise StoreError(f"sha256 {actual} differs from the expected {expected_sha256}")
    target = blob_path(actual)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        path.unlink(missing_ok=True)
    else:
        try:
            os.replace(path, target)
        except OSError:  # another file system: copy, then rename within the store
            tmp = target.with_suffix(".partial")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            path.unlink(missing_ok=True)
        os.chmod(target, 0o444)
    blob, _ = StoredBlob.objects.get_or_create(sha256=actual, defaults={"size": size})
    return blob


def free_bytes() -> int:
    path = root()
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free
