"""From HTTP request to stored samples: credential, size, JSON, validation, storage.

Shared by the ASGI fast path (``monitoring.asgi_fastpath``, many requests per write) and the
DRF view (``monitoring.api.views.AgentMetricsView``, one). Sample ingestion writes no history
rows: samples are observations, not changes (up to thousands per second).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from fleet.models import NODE_CREDENTIAL_PREFIX, hash_secret
from monitoring.ingest import LivePoint, MetricsInvalid, Prepared, prepare, store

log = logging.getLogger(__name__)

CREDENTIAL_CACHE_S = 10.0
_credentials: dict[str, tuple[int, float]] = {}  # credential hash -> (node id, when)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


UNAUTHENTICATED = Answer(
    401,
    {
        "detail": "This node's credential is not accepted: the node was deleted or its "
        "credential replaced. Join again with a new join token.",
        "code": "not_authenticated",
    },
)


def node_for(credential: str | None) -> int | None:
    """The node id of a node credential (cached for a few seconds), or None."""
    from fleet.services import authenticate_node

    if not credential or not credential.startswith(NODE_CREDENTIAL_PREFIX):
        return None
    digest = hash_secret(credential)
    now = time.monotonic()
    cached = _credentials.get(digest)
    if cached is not None and now - cached[1] < CREDENTIAL_CACHE_S:
        return cached[0]
    node = authenticate_node(credential)
    if node is None:
        _credentials.pop(digest, None)
        return None
    if len(_credentials) > 100_000:
        _credentials.clear()
    _credentials[digest] = (node.pk, now)
    return int(node.pk)


def parse(node_id: int, body: bytes) -> Prepared | Answer:
    if len(body) > settings.FLEET_METRICS_MAX_BYTES:
        return Answer(
            413,
            {
                "detail": f"The batch is larger than {settings.FLEET_METRICS_MAX_BYTES} bytes; "
                "send fewer rounds per request.",
                "code": "too_large",
            },
        )
    try:
        payload = json.loads(body)
    except ValueError:
        return Answer(400, {"detail": "The body is not JSON.", "code": "parse_error"})
    try:
        return prepare(node_id, payload)
    except MetricsInvalid as exc:
        return Answer(
            400,
            {
                "detail": "The metrics batch is malformed; nothing was stored.",
                "code": "invalid",
                "errors": exc.errors,
            },
        )


def receive_many(requests: list[tuple[str | None, bytes]]) -> tuple[list[Answer], list[LivePoint]]:
    """Answer each (credential, body); every valid batch is stored in one write."""
    close_old_connections()
    answers: list[Answer | None] = []
    batches: list[Prepared] = []
    for credential, body in requests:
        node_id = node_for(credential)
        if node_id is None:
            answers.append(UNAUTHENTICATED)
            continue
        parsed = parse(node_id, body)
        if isinstance(parsed, Answer):
            answers.append(parsed)
            continue
        answers.append(None)
        batches.append(parsed)
    stored, points = store(batches) if batches else ([], [])
    results = iter(stored)
    final = [a if a is not None else Answer(200, next(results).body()) for a in answers]
    return final, points
