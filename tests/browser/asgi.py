"""The product's ASGI application (``config.asgi``) under uvicorn on a thread, for browser
tests that need what Django's live server cannot serve: WebSockets (Channels)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class ServedAsgi:
    def __init__(self) -> None:
        from config.asgi import application

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                application, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self._run, name="browser-uvicorn", daemon=True)

    def _run(self) -> None:
        from django.db import connections

        try:
            self.server.run()
        finally:
            connections.close_all()

    def __enter__(self) -> ServedAsgi:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start serving config.asgi in 15 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
