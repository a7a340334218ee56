"""A lean ASGI handler for agents' replica reports, in front of Django.

``POST /api/v1/agent/replicas/<id>/status/`` ends every replica start: the agent's "healthy"
is the moment a deployment serves. Django's middleware stack and DRF's request handling cost
about as much as applying the report itself, so this handler does only what the DRF view
(deployments.api.agent_replicas, kept as the reference and for the API schema) does: the node
credential, the same serializer, :func:`deployments.replica_reports.apply_replica_report`, and
answers in the API's error shape (core.api.exceptions). The database work runs on a small
thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections
from rest_framework import exceptions

from core.api.exceptions import exception_handler
from fleet.asgi_agent import bearer, headers_of, read_body, request_id, respond
from fleet.models import NODE_CREDENTIAL_PREFIX

PATH = re.compile(r"^/api/v1/agent/replicas/(\d{1,18})/status/$")
MAX_BODY_BYTES = 16_384  # a report is a few hundred bytes; errors are cut to 8,000 characters
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="replica-reports")

Answer = tuple[int, dict[str, Any]]


def _error(exc: exceptions.APIException) -> Answer:
    response = exception_handler(exc, {})
    assert response is not None
    return response.status_code, dict(response.data)


def _apply(credential: str | None, replica_id: int, body: bytes) -> Answer:
    """Everything the DRF view does, on a worker thread with its own DB connection."""
    from deployments.api.agent_replicas import ReplicaStatusSerializer
    from deployments.replica_reports import apply_replica_report
    from fleet.services import authenticate_node

    close_old_connections()
    try:
        if not credential or not credential.startswith(NODE_CREDENTIAL_PREFIX):
            return _error(exceptions.NotAuthenticated())
        node = authenticate_node(credential)
        if node is None:
            return _error(
                exceptions.AuthenticationFailed(
                    "This node's credential is not accepted: the node was deleted or its "
                    "credential replaced. Join again with a new join token."
                )
            )
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:  # as DRF's JSONParser words it
            return _error(exceptions.ParseError(f"JSON parse error - {exc}"))
        serializer = ReplicaStatusSerializer(data=data)
        if not serializer.is_valid():
            return _error(exceptions.ValidationError(serializer.errors))
        replica = apply_replica_report(node, replica_id, dict(serializer.validated_data))
        if replica is None:
            return 404, {"detail": "No such replica on this node.", "code": "not_found"}
        return 200, {"state": replica.state, "reason": replica.reason}
    finally:
        close_old_connections()


async def handle(scope: dict[str, Any], receive: Any, send: Any, replica_id: int) -> None:
    headers = headers_of(scope)
    rid = request_id(headers)
    if scope["method"] != "POST":
        status, answer = _error(exceptions.MethodNotAllowed(scope["method"]))
        await respond(send, status, answer, rid, [(b"allow", b"POST")])
        return
    body = await read_body(receive, MAX_BODY_BYTES)
    if body is None:
        return
    if len(body) > MAX_BODY_BYTES:
        detail = f"A replica report is at most {MAX_BODY_BYTES} bytes."
        await respond(send, 413, {"detail": detail, "code": "too_large"}, rid)
        return
    loop = asyncio.get_running_loop()
    status, answer = await loop.run_in_executor(
        _executor, _apply, bearer(headers), replica_id, body
    )
    await respond(send, status, answer, rid)


def wrap(django_app: Any) -> Any:
    """An ASGI app sending replica reports to :func:`handle` and everything else on."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            found = PATH.match(scope["path"])
            if found:
                await handle(scope, receive, send, int(found.group(1)))
                return
        await django_app(scope, receive, send)

    return app
