"""The gateway as its own ASGI application, for a separate process in production.

``uvicorn gateway.asgi:application`` (or ``manage.py gateway``) serves ``/v1/…`` with the
same code the web process embeds, plus ``/metrics`` (Prometheus, this process's gateway
series) and ``/healthz``. Set ``FLEET_GATEWAY_EMBEDDED=false`` on the web processes then.
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from prometheus_client import make_asgi_app  # noqa: E402

from gateway.asgi_embed import lifespan  # noqa: E402
from gateway.proxy import PREFIX, handle  # noqa: E402
from gateway.responses import send_error, send_json  # noqa: E402

_metrics = make_asgi_app()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith(PREFIX):
        await handle(scope, receive, send)
    elif path == "/metrics":
        await _metrics(scope, receive, send)
    elif path == "/healthz":
        await send_json(send, 200, {"status": "ok"})
    else:
        await send_error(send, 404, f"Unknown endpoint {path}; this is the gateway.", "unknown_url")
