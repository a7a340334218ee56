"""``manage.py gateway``: run the OpenAI-compatible gateway as its own process."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve /v1/ (the OpenAI-compatible gateway) in its own uvicorn process."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument(
            "--workers", type=int, default=1, help="uvicorn worker processes (one gateway each)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        uvicorn.run(
            "gateway.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            lifespan="on",
            server_header=False,
            access_log=False,
        )
