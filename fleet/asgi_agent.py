"""What the ASGI fast paths of agent endpoints share (heartbeats, replica reports, metric
batches): the request id, the node credential, the body read up to a limit, a JSON answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

Headers = dict[bytes, bytes]


def headers_of(scope: dict[str, Any]) -> Headers:
    return dict(scope.get("headers") or [])


def request_id(headers: Headers) -> str:
    """The caller's X-Request-Id (cut to 64 characters), else a new one."""
    return headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex


def bearer(headers: Headers) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without one."""
    parts = headers.get(b"authorization", b"").decode("latin-1").split()
    return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The body, cut to ``limit + 1`` bytes (a longer one still reads as too large); None
    when the client went away."""
    chunks: list[bytes] = []
    kept = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if kept <= limit:
            piece = chunk[: limit + 1 - kept]
            chunks.append(piece)
            kept += len(piece)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Any,
    status: int,
    body: dict[str, Any],
    request_id: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A JSON answer, never cached; a 401 names the agent realm."""
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="agent"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
