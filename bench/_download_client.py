"""One timed ``huggingface_hub.snapshot_download`` in its own process, for bench/download.py.

    python bench/_download_client.py ENDPOINT REPO_ID REVISION CACHE_DIR [--token-file F]
        [--max-workers 8] [--expect FILE.json]

Prints one JSON line: seconds spent in ``snapshot_download`` (the interpreter start and the
imports are not counted), the bytes under the snapshot, and with ``--expect`` (a JSON object
path -> sha256) whether every file's content matches. Nothing here imports Django.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("repo_id")
    parser.add_argument("revision")
    parser.add_argument("cache_dir")
    parser.add_argument("--token-file", default=None)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--expect", default=None)
    args = parser.parse_args()
    token = Path(args.token_file).read_text().strip() if args.token_file else None

    from huggingface_hub import snapshot_download

    started = time.perf_counter()
    folder = snapshot_download(
        args.repo_id,
        revision=args.revision,
        endpoint=args.endpoint,
        token=token,
        cache_dir=args.cache_dir,
        max_workers=args.max_workers,
    )
    seconds = time.perf_counter() - started
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    out: dict[str, object] = {
        "seconds": seconds,
        "bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "pid": os.getpid(),
    }
    if args.expect:
        expected = json.loads(Path(args.expect).read_text())
        got = {str(p.relative_to(folder)): sha256_of(p) for p in files}
        out["verified"] = got == expected
        if got != expected:
            out["mismatch"] = sorted(
                k for k in set(got) | set(expected) if got.get(k) != expected.get(k)
            )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
