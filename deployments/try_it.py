"""Try it: one text completion sent from the control plane to one replica, timed.

The request goes to ``http://<node address>:<host_port>`` where the node address is what the
agent reports as ``inventory.host.address`` (fleet/agent/inventory.py: 127.0.0.1 when its
--server is on loopback, else the interface address towards the server), 127.0.0.1 when it
reports none. The runtime adapter builds the request (``completion_request``) and reads the
answer (``parse_completion``); custom images are not supported. Operators only: it spends
the replica's compute.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import requests

from core.errors import ConflictError, ServiceError
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica
from deployments.runtimes import get_adapter

MAX_PROMPT_BYTES = 8192
MAX_TOKENS = 512
TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 1_000_000
SERVING = (ReplicaState.AVAILABLE, ReplicaState.HEALTHY)


@dataclass
class TryResult:
    replica: int
    slot: int
    node: str
    url: str
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttfb_ms: float  # request sent → first byte of the answer
    total_ms: float  # request sent → whole answer read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def node_address(replica: Replica) -> str:
    host = ((replica.node.inventory if replica.node else None) or {}).get("host") or {}
    address = host.get("address") if isinstance(host, dict) else None
    return str(address) if address else "127.0.0.1"


def pick_replica(deployment: Deployment, replica: Replica | int | None = None) -> Replica:
    """The given replica (it must serve, and belong to the deployment), else the available
    replica of the current revision started longest ago, else any serving one."""
    rows = Replica.objects.select_related("node", "revision").filter(
        deployment=deployment,
        state__in=SERVING,
        node__isnull=False,
        host_port__isnull=False,
    )
    if replica is not None:
        pk = replica.pk if isinstance(replica, Replica) else int(replica)
        chosen = rows.filter(pk=pk).first()
        if chosen is None:
            raise ConflictError(
                f"Replica {pk} of {deployment.name} is not serving (healthy or available).",
                field="replica",
            )
        return chosen
    ordered = sorted(
        rows,
        key=lambda r: (
            r.revision_id != deployment.current_revision_id,
            r.state != ReplicaState.AVAILABLE,
            r.available_at or r.created_at,
        ),
    )
    if not ordered:
        raise ConflictError(f"{deployment.name} has no serving replica to try.")
    return ordered[0]


def check_request(prompt: str, max_tokens: int) -> None:
    if not prompt or not prompt.strip():
        raise ServiceError("Write a prompt.", field="prompt")
    if len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise ServiceError(
            f"The prompt is over {MAX_PROMPT_BYTES // 1024} KB; shorten it.", field="prompt"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise ServiceError("max_tokens must be a whole number.", field="max_tokens")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise ServiceError(f"max_tokens must be between 1 and {MAX_TOKENS}.", field="max_tokens")


def try_completion(
    deployment: Deployment,
    prompt: str,
    max_tokens: int = 64,
    *,
    replica: Replica | int | None = None,
    timeout: float = TIMEOUT_S,
) -> TryResult:
    """Send ``prompt`` to one serving replica and time the answer (ServiceError if not)."""
    check_request(prompt, max_tokens)
    chosen = pick_replica(deployment, replica)
    try:
        adapter = get_adapter(chosen.revision.runtime)
        path, body = adapter.completion_request(prompt, max_tokens, model=deployment.name)
    except NotImplementedError as exc:
        raise ServiceError(str(exc)) from None
    url = f"http://{node_address(chosen)}:{chosen.host_port}{path}"
    started = time.monotonic()
    ttfb: float | None = None
    chunks: list[bytes] = []
    size = 0
    try:
        with requests.post(
            url, json=body, timeout=(CONNECT_TIMEOUT_S, timeout), stream=True
        ) as answer:
            for chunk in answer.iter_content(chunk_size=None):
                if ttfb is None:
                    ttfb = time.monotonic() - started
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise ServiceError("The replica's answer is over 1 MB; not shown.")
                if time.monotonic() - started > timeout:
                    raise requests.Timeout()
            status = answer.status_code
    except requests.Timeout:
        raise ServiceError(
            f"The replica did not answer within {timeout:g} s; try fewer tokens."
        ) from None
    except requests.RequestException as exc:
        raise ServiceError(f"Could not reach the replica at {url}: {exc}") from None
    total = time.monotonic() - started
    raw = b"".join(chunks)
    if status >= 400:
        text = raw.decode("utf-8", errors="replace")[:500]
        raise ServiceError(f"The replica answered HTTP {status}: {text}")
    try:
        text, prompt_tokens, completion_tokens = adapter.parse_completion(json.loads(raw))
    except ValueError as exc:
        raise ServiceError(f"The replica's answer is not a completion: {exc}") from None
    return TryResult(
        replica=chosen.pk,
        slot=chosen.slot,
        node=chosen.node.name if chosen.node else "",
        url=url,
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttfb_ms=round((ttfb if ttfb is not None else total) * 1000, 1),
        total_ms=round(total * 1000, 1),
    )
