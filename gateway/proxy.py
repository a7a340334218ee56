"""The gateway's ASGI handler: ``/v1/…`` requests routed to replicas, bytes streamed through.

Per request: the key is checked against the in-memory table (SHA-256 of the bearer key),
the body read (up to FLEET_GATEWAY_MAX_BODY_BYTES) and parsed for ``model`` (and
``stream``), the key's limits checked in Redis, a deployment picked by the route's weights
and a replica by least outstanding requests of two random ones. The replica's answer is
passed on chunk by chunk as it arrives; usage is read from the runtime's ``usage`` (for
streams, from the final chunk, asking the runtime for it with ``stream_options`` when the
client did not, and then not passing that chunk on) and recorded in the background.
No database access happens here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
import uuid
from typing import Any

from gateway.activator import Refused
from gateway.metrics import EJECTIONS, RETRIES, TTFB
from gateway.responses import send_error, send_json
from gateway.runtime import Gateway, local_gateway
from gateway.table import Endpoint, KeyInfo, RoutingTable
from gateway.tally import SseFilter, Tally, usage_from_json
from gateway.upstream import Response, UpstreamError
from gateway.usage import Outcome

log = logging.getLogger(__name__)

PREFIX = "/v1/"
PROXIED = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
STREAMABLE = {"/v1/chat/completions", "/v1/completions"}
KEY_PREFIX = "slmk_"
KEPT_RESPONSE_BODY = 4 * 1024 * 1024  # a non-streamed answer is parsed for usage up to this
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authenticate",
    b"date",
    b"server",
}
RETRYABLE_STATUS = {502, 503, 504}
_rng = random.Random()  # noqa: S311 - load spreading, not secrets


_ids = itertools.count(1)
_id_prefix = uuid.uuid4().hex[:12]  # per process; ids are this plus a counter (no syscall)


def _request_id() -> str:
    return f"{_id_prefix}{next(_ids):08x}"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _bearer(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str, int | None]:
    """(key, request id, content length) from the request's headers."""
    key = None
    request_id = ""
    length = None
    for name, value in headers:
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() == "bearer":
                key = parts[1]
        elif name == b"x-request-id":
            request_id = value.decode("latin-1")[:64]
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return key, request_id, length


async def _authenticate(gateway: Gateway, key: str | None) -> KeyInfo | None:
    import hashlib

    if not key or not key.startswith(KEY_PREFIX):
        return None
    digest = hashlib.sha256(key.encode()).hexdigest()
    table = await gateway.current()
    info = table.keys.get(digest)
    if info is None:
        table = await gateway.reload_for_unknown_key()
        info = table.keys.get(digest)
    if info is None or info.expired(time.time()):
        return None
    return info


def _models(table: RoutingTable, key: KeyInfo) -> list[dict[str, Any]]:
    return [_model_entry(table, name) for name in sorted(table.routes) if key.may_use(name)]


def _model_entry(table: RoutingTable, name: str) -> dict[str, Any]:
    route = table.routes[name]
    return {
        "id": name,
        "object": "model",
        "created": table.created.get(name, 0),
        "owned_by": "slm-fleet",
        "fleet": {
            "kind": "alias" if route.is_alias else "deployment",
            "targets": [{"deployment": d, "weight": w} for d, w in route.targets],
            "replicas": sum(len(table.endpoints.get(d, ())) for d, _ in route.targets),
        },
    }


def _choose_deployment(
    gateway: Gateway, table: RoutingTable, targets: tuple[tuple[str, int], ...]
) -> tuple[str | None, tuple[Endpoint, ...]]:
    """A target by weight among those with a replica in the pool (None when none has)."""
    usable = [
        (name, weight, table.endpoints.get(name, ()))
        for name, weight in targets
        if weight > 0 and gateway.pool.healthy(table.endpoints.get(name, ()))
    ]
    if not usable:
        first = next((name for name, weight in targets if weight > 0), None)
        return first, ()
    if len(usable) == 1:
        return usable[0][0], usable[0][2]
    point = _rng.uniform(0, sum(weight for _, weight, _ in usable))
    for name, weight, endpoints in usable:
        point -= weight
        if point <= 0:
            return name, endpoints
    return usable[-1][0], usable[-1][2]


async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
    gateway = local_gateway.get()
    started = time.perf_counter()
    method = scope["method"]
    path = scope["path"].rstrip("/")
    key_text, request_id, length = _bearer(scope.get("headers") or [])
    request_id = request_id or _request_id()
    key = await _authenticate(gateway, key_text)
    if key is None:
        gateway.stats.finished("-", "-", 401, time.perf_counter() - started, in_flight=False)
        await send_error(
            send,
            401,
            "Send a valid gateway access key as 'Authorization: Bearer slmk_…'; operators "
            "create keys under Gateway → Access keys.",
            "invalid_api_key",
            request_id=request_id,
        )
        return
    if path == "/v1/models" or path.startswith("/v1/models/"):
        await _models_endpoint(gateway, key, method, path, send, request_id)
        return
    if path not in PROXIED:
        await send_error(
            send,
            404,
            f"Unknown endpoint {scope['path']}; the gateway serves /v1/chat/completions, "
            "/v1/completions, /v1/embeddings and /v1/models.",
            "unknown_url",
            request_id=request_id,
        )
        return
    if method != "POST":
        await send_error(
            send, 405, f"Use POST for {path}.", "method_not_allowed", request_id=request_id
        )
        return
    await _proxy(gateway, key, path, scope, receive, send, request_id, length, started)


async def _models_endpoint(
    gateway: Gateway, key: KeyInfo, method: str, path: str, send: Any, request_id: str
) -> None:
    if method != "GET":
        await send_error(send, 405, "Use GET.", "method_not_allowed", request_id=request_id)
        return
    table = gateway.table
    if path == "/v1/models":
        await send_json(send, 200, {"object": "list", "data": _models(table, key)})
        return
    name = path.removeprefix("/v1/models/")
    if name not in table.routes:
        await send_error(
            send,
            404,
            f"The model {name!r} does not exist.",
            "model_not_found",
            request_id=request_id,
        )
        return
    if not key.may_use(name):
        await send_error(
            send,
            403,
            f"This key may not use the model {name!r}.",
            "model_not_allowed",
            request_id=request_id,
        )
        return
    await send_json(send, 200, _model_entry(table, name))


def _refuse(
    gateway: Gateway, key: KeyInfo, status: int, reason: str, started: float, deployment: str = "-"
) -> None:
    gateway.stats.finished(
        deployment, key.name, status, time.perf_counter() - started, in_flight=False, error=reason
    )


async def _proxy(
    gateway: Gateway,
    key: KeyInfo,
    path: str,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    request_id: str,
    length: int | None,
    started: float,
) -> None:
    limit = gateway.max_body
    too_large = (
        f"The request body is larger than the gateway's limit of {limit} bytes "
        "(FLEET_GATEWAY_MAX_BODY_BYTES); send a shorter prompt or ask an operator to raise it."
    )
    if length is not None and length > limit:
        _refuse(gateway, key, 413, "too_large", started)
        await send_error(send, 413, too_large, "request_too_large", request_id=request_id)
        return
    try:
        body = await _read_body(receive, limit)
    except BodyTooLarge:
        _refuse(gateway, key, 413, "too_large", started)
        await send_error(send, 413, too_large, "request_too_large", request_id=request_id)
        return
    except ClientGone:
        return
    try:
        payload = json.loads(body)
    except ValueError as exc:
        _refuse(gateway, key, 400, "bad_json", started)
        await send_error(
            send,
            400,
            f"The body is not valid JSON: {exc}.",
            "invalid_json",
            request_id=request_id,
        )
        return
    if not isinstance(payload, dict):
        _refuse(gateway, key, 400, "bad_json", started)
        await send_error(
            send, 400, "The body must be a JSON object.", "invalid_json", request_id=request_id
        )
        return
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        _refuse(gateway, key, 400, "no_model", started)
        await send_error(
            send,
            400,
            "Name the model to use in the 'model' field.",
            "missing_model",
            param="model",
            request_id=request_id,
        )
        return
    table = gateway.table
    route = table.routes.get(model)
    if route is None:
        _refuse(gateway, key, 404, "unknown_model", started)
        await send_error(
            send,
            404,
            f"The model {model!r} does not exist; GET /v1/models lists the models this key "
            "may use.",
            "model_not_found",
            param="model",
            request_id=request_id,
        )
        return
    if not key.may_use(model):
        _refuse(gateway, key, 403, "model_not_allowed", started)
        await send_error(
            send,
            403,
            f"This key may not use the model {model!r}; an operator can add it to the key's "
            "models.",
            "model_not_allowed",
            param="model",
            request_id=request_id,
        )
        return
    verdict = await gateway.limiter.check(key)
    if not verdict.allowed:
        _refuse(gateway, key, 429, "rate_limited", started)
        await send_error(
            send,
            429,
            verdict.message,
            "rate_limit_exceeded",
            retry_after=verdict.retry_after,
            request_id=request_id,
        )
        return
    deployment, endpoints = _choose_deployment(gateway, table, route.targets)
    cold = table.cold_start.get(deployment or "")
    if not endpoints and cold is not None:
        assert deployment is not None
        try:
            endpoints = await gateway.activator.hold(deployment, cold)
        except Refused as refused:
            _refuse(gateway, key, 503, f"cold_start_{refused.why}", started, deployment)
            retry = max(1, round(cold.timeout_s / 4))
            why = (
                f"{cold.queue} requests already wait for it"
                if refused.why == "queue_full"
                else f"no replica was ready within {cold.timeout_s:g} s"
            )
            await send_error(
                send,
                503,
                f"The model {model!r} is starting (it was scaled to zero): {why}; retry "
                f"after {retry} s.",
                "model_starting",
                retry_after=retry,
                request_id=request_id,
            )
            return
    if not endpoints:
        retry = max(1, round(gateway.pool.eject_seconds))
        _refuse(gateway, key, 503, "no_replica", started, deployment or "-")
        await send_error(
            send,
            503,
            f"No healthy replica serves {model!r} right now; retry after {retry} s. "
            "Check the deployment's replicas in the console.",
            "no_healthy_replica",
            retry_after=retry,
            request_id=request_id,
        )
        return
    assert deployment is not None
    stream = bool(payload.get("stream")) and path in STREAMABLE
    strip_usage = False
    rewrite = route.is_alias
    if route.is_alias:
        payload["model"] = deployment  # the runtime serves the deployment's name
    if stream:
        options = payload.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            payload["stream_options"] = {**(options or {}), "include_usage": True}
            strip_usage = rewrite = True
    if rewrite:
        body = json.dumps(payload).encode()
    await _forward(
        gateway,
        key,
        deployment,
        endpoints,
        path,
        body,
        scope,
        receive,
        send,
        request_id,
        stream,
        strip_usage,
        started,
    )


async def _forward(
    gateway: Gateway,
    key: KeyInfo,
    deployment: str,
    endpoints: tuple[Endpoint, ...],
    path: str,
    body: bytes,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    request_id: str,
    stream: bool,
    strip_usage: bool,
    started: float,
) -> None:
    assert gateway.upstream is not None
    headers: tuple[tuple[str, str], ...] = (
        ("Content-Type", "application/json"),
        ("X-Request-Id", request_id),
    )
    if stream:
        headers += (("Accept", "text/event-stream"),)
    tried: set[int] = set()
    response: Response | None = None
    endpoint: Endpoint | None = None
    status = 502
    error = ""
    tally = Tally()
    gateway.stats.started(deployment)
    for attempt in range(gateway.retries + 1):
        endpoint = gateway.pool.pick(endpoints, tried)
        if endpoint is None:
            break
        tried.add(endpoint.replica_id)
        gateway.pool.acquire(endpoint)
        try:
            response = await gateway.upstream.request(
                "POST", endpoint.host, endpoint.port, path, body, headers
            )
        except UpstreamError as exc:
            gateway.pool.release(endpoint)
            response = None
            if exc.stale:  # an idle connection the replica had closed: not its fault
                log.info("replica %s closed an idle connection; trying again", endpoint.url)
            else:
                _eject(gateway, endpoint, deployment, str(exc))
            _count_retry(deployment, attempt, gateway.retries)
            continue
        if response.status in RETRYABLE_STATUS and attempt < gateway.retries:
            _eject(gateway, endpoint, deployment, f"answered {response.status}")
            response.close()
            gateway.pool.release(endpoint)
            response = None
            _count_retry(deployment, attempt, gateway.retries)
            continue
        break
    if response is None or endpoint is None:
        seconds = time.perf_counter() - started
        gateway.stats.finished(deployment, key.name, 503, seconds, in_flight=True, error="upstream")
        gateway.usage.add(Outcome(key.id, deployment, error=True))
        retry = max(1, round(gateway.pool.eject_seconds))
        await send_error(
            send,
            503,
            f"No replica of {deployment!r} could take the request ({len(tried)} tried); "
            f"retry after {retry} s.",
            "no_healthy_replica",
            retry_after=retry,
            request_id=request_id,
        )
        return
    status = response.status
    TTFB.labels(deployment).observe(time.perf_counter() - started)
    client_gone = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(
        _watch_disconnect(receive, client_gone, response)
    )
    try:
        out_headers = [
            (name, value)
            for name, value in response.headers
            if name not in HOP_BY_HOP and not (strip_usage and name == b"content-length")
        ]
        out_headers += [
            (b"x-request-id", request_id.encode()),
            (b"x-fleet-deployment", deployment.encode()),
            (b"x-fleet-replica", str(endpoint.replica_id).encode()),
        ]
        is_sse = response.content_type == "text/event-stream"
        sse = SseFilter(tally, strip_usage) if is_sse else None
        kept: list[bytes] = []
        kept_size = 0
        # with a known length the last chunk ends the answer (one send fewer per request)
        remaining = response.content_length if sse is None else None
        ended = False
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        async for chunk in response.chunks():
            if sse is not None:
                chunk = sse.feed(chunk)
                if not chunk:
                    continue
            elif kept_size <= KEPT_RESPONSE_BODY:
                kept.append(chunk)
                kept_size += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            more = remaining is None or remaining > 0
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            ended = not more
        if sse is not None:
            tail = sse.finish()
            if tail:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        elif kept_size <= KEPT_RESPONSE_BODY and kept:
            usage_from_json(b"".join(kept), tally)
        if not ended:
            await send({"type": "http.response.body", "body": b""})
        gateway.pool.succeeded(endpoint)
        if status >= 500:
            error = f"upstream_{status}"
    except UpstreamError as exc:
        error = "client_disconnected" if client_gone.is_set() else "upstream_broken"
        if not client_gone.is_set():
            log.warning("replica %s broke off its answer: %r", endpoint.url, exc)
            raise  # the server drops the connection: the client sees the answer is cut

    except asyncio.CancelledError:
        error = "client_disconnected"
        raise
    finally:
        watcher.cancel()
        response.close()
        gateway.pool.release(endpoint)
        prompt, completion = tally.prompt_tokens, tally.completion_tokens
        if not tally.reported and stream:
            completion = tally.chunks  # one token per streamed chunk (llama.cpp, vLLM)
        gateway.stats.finished(
            deployment,
            key.name,
            status,
            time.perf_counter() - started,
            in_flight=True,
            error=error,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        gateway.usage.add(
            Outcome(
                key.id,
                deployment,
                prompt_tokens=prompt,
                completion_tokens=completion,
                error=bool(error) and error != "client_disconnected",
            )
        )


def _eject(gateway: Gateway, endpoint: Endpoint, deployment: str, why: str) -> None:
    if gateway.pool.failed(endpoint, why):
        EJECTIONS.labels(deployment).inc()


def _count_retry(deployment: str, attempt: int, retries: int) -> None:
    if attempt < retries:
        RETRIES.labels(deployment).inc()


async def _watch_disconnect(receive: Any, client_gone: asyncio.Event, response: Response) -> None:
    """When the client goes away, close the replica's answer (it stops generating)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client_gone.set()
            response.close()
            return


def wrap(app: Any) -> Any:
    """An ASGI app serving ``/v1/…`` from the gateway and everything else from ``app``."""
    from django.conf import settings

    if not settings.FLEET_GATEWAY_EMBEDDED:
        return app

    async def gateway_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return gateway_app
