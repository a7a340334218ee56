"""Answers in OpenAI's error shape, sent straight over ASGI."""

from __future__ import annotations

import json
from typing import Any

Send = Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


async def send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_error(
    send: Send,
    status: int,
    message: str,
    code: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
    request_id: str = "",
) -> None:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI's API answers."""
    headers: list[tuple[bytes, bytes]] = []
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="gateway"'))
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    error = {
        "message": message,
        "type": ERROR_TYPES.get(status, "server_error"),
        "param": param,
        "code": code,
    }
    await send_json(send, status, {"error": error}, headers)
