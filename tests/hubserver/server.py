"""A Hugging Face Hub compatible server over a directory of repositories (plain ASGI).

The real ``huggingface_hub`` client is the judge of its answers; the response shapes come
from :mod:`models_catalog.mirror.protocol`, shared with the fleet's own mirror.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn

from models_catalog.mirror import protocol
from tests.hubserver.repos import ESCAPE_BYTES, Denied, HubDirectory, HubRepo


class DropConnection(Exception):
    """Raised mid-body: the ASGI server closes the connection (a ``fail_after_bytes`` fault)."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Callable[[], AsyncIterator[bytes]] | None = None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(data).encode()
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, body)


def _error(status: int, code: str | None, message: str, **headers: str) -> Reply:
    extra, body = protocol.error(code, message)
    return _json(body, status, {**extra, **headers})


def _denied(denied: Denied) -> Reply:
    return _error(denied.status, denied.code, denied.message)


@dataclass
class Request:
    method: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    base_url: str
    path: str

    @property
    def token(self) -> str | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[-1].lower() in ("1", "true")


class HubApp:
    """The ASGI application. ``log`` records (method, path, Range header) of every request."""

    def __init__(self, root: Path) -> None:
        self.hub = HubDirectory(root)
        self.log: list[tuple[str, str, str | None]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "127.0.0.1")
        request = Request(
            method=scope["method"],
            segments=[unquote(part) for part in raw.split("/")[1:]],
            query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            body=body,
            base_url=f"{scope.get('scheme', 'http')}://{host}",
            path=raw,
        )
        self.log.append((request.method, scope["path"], headers.get("range")))
        reply = await asyncio.to_thread(self.handle, request)
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        if reply.stream is not None and request.method != "HEAD":
            async for chunk in reply.stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body"})
        else:
            body = b"" if request.method == "HEAD" else reply.body
            await send({"type": "http.response.body", "body": body})

    # --- routing ---
    def handle(self, request: Request) -> Reply:
        parts = request.segments
        if parts[:2] == ["api", "models"]:
            if len(parts) == 2 or parts[2:] == [""]:
                return self.search(request)
            return self.api(request, parts[2:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(request, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        return _error(404, protocol.REPO_NOT_FOUND, "Not found.")

    def _repo(self, repo_id: str, request: Request) -> HubRepo | Reply:
        repo = self.hub.repo(repo_id)
        if repo is None:
            return _error(404, protocol.REPO_NOT_FOUND, f"Repository {repo_id} not found.")
        denied = repo.visible_to(request.token)
        return _denied(denied) if denied else repo

    def _commit(self, repo: HubRepo, revision: str | None) -> str | Reply:
        sha = repo.resolve(revision)
        if sha is None:
            return _error(404, protocol.REVISION_NOT_FOUND, f"Invalid rev id: {revision}")
        return sha

    def api(self, request: Request, parts: list[str]) -> Reply:
        if len(parts) < 2:
            return _error(404, protocol.REPO_NOT_FOUND, "Not found.")
        repo = self._repo(f"{parts[0]}/{parts[1]}", request)
        if isinstance(repo, Reply):
            return repo
        action, rest = (parts[2], parts[3:]) if len(parts) > 2 else ("", [])
        if action == "refs":
            return _json(protocol.refs(repo.branches, include_prs=request.flag("include_prs")))
        if action not in ("", "revision", "tree", "paths-info", "commits"):
            return _error(404, None, "Not found.")
        revision, path = "/".join(rest), ""
        if action == "tree":
            revision, path = protocol.split_revision(revision, repo.revisions())
        sha = self._commit(repo, revision or None)
        if isinstance(sha, Reply):
            return sha
        if action in ("", "revision"):
            return _json(repo.info(sha, blobs=request.flag("blobs")))
        if action == "commits":
            return _json(repo.history(sha))
        if action == "paths-info":
            form = parse_qs(request.body.decode())
            expand = form.get("expand", [""])[-1].lower() == "true"
            last = repo.history(sha)[0] if expand else None
            return _json(protocol.paths_info(repo.files(sha), form.get("paths", []), _last(last)))
        return self.tree(request, repo, sha, path)

    def tree(self, request: Request, repo: HubRepo, sha: str, path: str) -> Reply:
        expand = request.flag("expand")
        last = _last(repo.history(sha)[0]) if expand else None
        entries = protocol.tree(
            repo.files(sha), path, recursive=request.flag("recursive"), last_commit=last
        )
        if entries is None:
            return _error(
                404, protocol.ENTRY_NOT_FOUND, f"{path} does not exist", **{"X-Repo-Commit": sha}
            )
        limit = protocol.TREE_PAGE_EXPANDED if expand else protocol.TREE_PAGE
        items, cursor = protocol.page(entries, request.query.get("cursor", [None])[-1], limit)
        headers = {}
        if cursor is not None:
            query = "&".join(f"{k}={v[-1]}" for k, v in request.query.items() if k != "cursor")
            headers["Link"] = (
                f'<{request.base_url}{request.path}?{query}&cursor={cursor}>; rel="next"'
            )
        return _json(items, headers=headers)

    def search(self, request: Request) -> Reply:
        q = {key: values[-1] for key, values in request.query.items()}
        wanted = request.query.get("filter", [])
        results = []
        for repo in self.hub.repos():
            sha = repo.resolve("main")
            if sha is None or repo.visible_to(request.token) is not None:
                continue
            entry = repo.summary(sha)
            labels = {*entry["tags"], entry["library_name"], entry["pipeline_tag"]}
            if q.get("search", "").lower() not in entry["id"].lower():
                continue
            if q.get("author") and entry["id"].split("/")[0] != q["author"]:
                continue
            if any(tag not in labels for tag in wanted):
                continue
            if q.get("pipeline_tag") and entry["pipeline_tag"] != q["pipeline_tag"]:
                continue
            if request.flag("full") or request.flag("config") or request.flag("cardData"):
                info = repo.info(sha, blobs=False)
                keys = ["siblings", "sha"] * request.flag("full") + ["config"] * request.flag(
                    "config"
                )
                keys += ["cardData"] * request.flag("cardData")
                entry.update({key: info[key] for key in keys if key in info})
            results.append(entry)
        sort = q.get("sort")
        if sort:
            reverse = q.get("direction", "-1") == "-1"
            results.sort(key=lambda entry: _sort_key(entry.get(sort)), reverse=reverse)
        if q.get("limit", "").isdigit():
            results = results[: int(q["limit"])]
        return _json(results)

    # --- files ---
    def resolve(self, request: Request, repo_id: str, revision: str, path: str) -> Reply:
        repo = self._repo(repo_id, request)
        if isinstance(repo, Reply):
            return repo
        revision, path = protocol.split_revision(f"{revision}/{path}", repo.revisions())
        sha = self._commit(repo, revision)
        if isinstance(sha, Reply):
            return sha
        denied = repo.readable_by(request.token)
        if denied is not None:
            return _denied(denied)
        file = next((f for f in repo.files(sha) if f.path == path), None)
        if file is None:
            return _error(
                404, protocol.ENTRY_NOT_FOUND, f"{path} does not exist", **{"X-Repo-Commit": sha}
            )
        headers = protocol.file_headers(sha, file)
        source = repo.source(sha, path)
        if request.method == "HEAD":
            return Reply(200, headers)
        try:
            wanted = protocol.parse_range(
                request.headers.get("range"),
                file.size,
                if_range=request.headers.get("if-range"),
                etag=file.etag,
            )
        except protocol.Unsatisfiable:
            return _error(
                416, None, "Range not satisfiable", **{"Content-Range": f"bytes */{file.size}"}
            )
        span = wanted or protocol.ByteRange(0, file.size)
        headers["Content-Length"] = str(span.stop - span.start)
        if wanted:
            headers["Content-Range"] = wanted.content_range(file.size)
        faults = repo.faults
        corrupt = path in faults.get("corrupt", [])
        fail_after = faults.get("fail_after_bytes", {}).get(path)

        async def stream() -> AsyncIterator[bytes]:
            position = span.start
            chunks = (
                protocol.aread_chunks(source, span.start, span.stop)
                if source
                else _once(ESCAPE_BYTES[span.start : span.stop])
            )
            async for chunk in chunks:
                if corrupt and position == span.start:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                cut = fail_after is not None and span.start == 0  # a resumed request gets through
                end = position + len(chunk)
                if cut and position < fail_after <= end and fail_after < span.stop:
                    yield chunk[: fail_after - position]
                    await asyncio.sleep(0.05)  # let the bytes leave before the connection drops
                    raise DropConnection(
                        f"fault: connection dropped after {fail_after} bytes of {path}"
                    )
                position += len(chunk)
                yield chunk

        return Reply(206 if wanted else 200, headers, stream=stream)


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


def _last(entry: dict[str, Any] | None) -> dict[str, str] | None:
    return {"id": entry["id"], "title": entry["title"], "date": entry["date"]} if entry else None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def serve_in_thread(app: Any, port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve an ASGI app with uvicorn in a background thread; returns (base URL, stop)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{bound}", stop


def run_in_thread(
    root: Path, port: int = 0, app: HubApp | None = None
) -> tuple[str, Callable[[], None]]:
    """Serve the repositories under ``root`` in a background thread; returns (URL, stop)."""
    return serve_in_thread(app or HubApp(root), port)
