"""The gateway's HTTP/1.1 client to replicas: pooled keep-alive connections, streamed bodies.

Why not aiohttp or httpx: every microsecond the client spends per request is added to every
answer and, on a machine where the replicas compete for the same cores, taken from them.
With aiohttp the gateway process used 0.49–0.60 ms of CPU per proxied request in
bench/gateway.py; with this client (an asyncio protocol + httptools, the parser uvicorn
uses; the request written in one send, body chunks handed over as parsed, no task or timer
per request) 0.43–0.44 ms, and added latency fell with it (docs/gateway.md).

It only speaks what the gateway needs: POST/GET with a full body to ``http://host:port``,
answers with Content-Length, chunked or close-delimited bodies. Errors say whether the
request may have reached the replica (:class:`UpstreamError`).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools

IDLE_S = 4.0  # below llama.cpp's 5 s keep-alive, so a pooled connection is rarely stale
HIGH_WATER = 64  # body chunks queued before reading from the replica pauses


class UpstreamError(Exception):
    """A replica failed the request.

    ``connect``: the connection could not be opened (refused, unreachable, timed out);
    ``stale``: a reused keep-alive connection was closed before any answer (the replica
    never saw the request; trying elsewhere is always safe); ``timeout``: no bytes within
    the read timeout.
    """

    def __init__(
        self, message: str, *, connect: bool = False, stale: bool = False, timeout: bool = False
    ) -> None:
        super().__init__(message)
        self.connect = connect
        self.stale = stale
        self.timeout = timeout


class Response:
    """An answer being received: status and headers now, the body as it arrives."""

    def __init__(self, conn: _Connection, status: int, headers: list[tuple[bytes, bytes]]):
        self.conn = conn
        self.status = status
        self.headers = headers
        self.content_length: int | None = None
        self.content_type = ""
        for name, value in headers:
            if name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif name == b"content-type":
                self.content_type = value.split(b";", 1)[0].strip().decode("latin-1").lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as the replica sends them; raises :class:`UpstreamError` if cut off."""
        conn = self.conn
        while True:
            if conn.body:
                chunk = conn.body.popleft()
                if conn.paused and len(conn.body) < HIGH_WATER // 2:
                    conn.resume()
                yield chunk
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            conn.waiter = asyncio.get_running_loop().create_future()
            await conn.waiter

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        """Give the connection back (whole answer read, keep-alive) or close it."""
        self.conn.finish()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool, key: tuple[str, int], read_timeout: float) -> None:
        self.pool = pool
        self.key = key
        self.read_timeout = read_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.last_used = time.monotonic()
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[Response] | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.error: UpstreamError | None = None
        self.got_bytes = False
        self.paused = False
        self.last_activity = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.keep_alive = False
        self.delimited_by_close = False
        self.finished = False

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the replica's answer is not HTTP: {exc}"))
            self.close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.complete or (self.head is None and self.waiter is None):
            return
        if self.head is not None and self.head.done() and self.delimited_by_close:
            self.complete = True  # a body without length ends with the connection
            self._wake()
        elif not self.got_bytes:
            self._fail(
                UpstreamError(
                    "the replica closed the connection before answering", stale=self.reused
                )
            )
        else:
            self._fail(UpstreamError("the replica closed the connection mid-answer"))

    def pause_writing(self) -> None:  # the request body is small; nothing to throttle
        return None

    def resume_writing(self) -> None:
        return None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        names = {name for name, _ in self.headers}
        self.delimited_by_close = (
            b"content-length" not in names and b"transfer-encoding" not in names
        )
        if self.head is not None and not self.head.done():
            self.head.set_result(Response(self, self.parser.get_status_code(), self.headers))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if len(self.body) >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # helpers
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        self._wake()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _check_silence(self) -> None:
        if self.complete or self.closed:
            return
        if self.paused:  # our reader is slow, not the replica
            self.last_activity = self.loop.time()
        silent = self.loop.time() - self.last_activity
        if silent >= self.read_timeout:
            self._fail(
                UpstreamError(
                    f"the replica sent nothing for {self.read_timeout:.0f} s", timeout=True
                )
            )
            self.close_transport()
        else:
            self.timer = self.loop.call_later(self.read_timeout - silent, self._check_silence)

    def close_transport(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, body: bytes) -> Response:
        assert self.transport is not None
        self.reset()
        self.head = self.loop.create_future()
        self.timer = self.loop.call_later(self.read_timeout, self._check_silence)
        self.transport.write(head + body)
        return await self.head

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.complete and self.keep_alive and not self.closed and self.error is None:
            self.reused = True
            self.last_used = time.monotonic()
            self.pool.put_back(self)
        else:
            self.close_transport()


class Pool:
    """Keep-alive connections per replica address."""

    def __init__(self, connect_timeout: float, read_timeout: float, size: int) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.size = size
        self.idle: dict[tuple[str, int], list[_Connection]] = {}

    async def _connection(self, host: str, port: int) -> _Connection:
        key = (host, port)
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.last_used < IDLE_S:
                return conn
            conn.close_transport()
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, key, self.read_timeout), host, port
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError(
                f"connecting to {host}:{port} took over {self.connect_timeout:.1f} s",
                connect=True,
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}", connect=True
            ) from None
        return protocol

    def put_back(self, conn: _Connection) -> None:
        idle = self.idle.setdefault(conn.key, [])
        if len(idle) < self.size:
            idle.append(conn)
        else:
            conn.close_transport()

    def forget(self, conn: _Connection) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """Send a request; returns once status and headers arrived (the body streams)."""
        conn = await self._connection(host, port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            return await conn.request(head, body)
        except BaseException:
            conn.finish()
            raise

    async def close(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.close_transport()
        self.idle.clear()
