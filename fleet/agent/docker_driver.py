"""The agent's single adapter to the local Docker engine (Docker SDK for Python).

Everything the agent does with containers goes through ``DockerDriver``; it raises only
``DockerUnavailable`` (engine unreachable, retry later) and ``DockerError`` (the engine
answered with an error; ``retryable`` says whether a retry can help).

Containers the fleet manages carry labels, so a command that runs twice finds its own
earlier work instead of duplicating it; the label keys are the constants below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import requests
from docker.client import DockerClient, from_env
from docker.errors import APIError, DockerException

from fleet.agent.errors import DockerError, DockerUnavailable

LABEL_PREFIX = "fleet."
LABEL_MANAGED = "fleet.managed"
LABEL_NODE = "fleet.node"
LABEL_DEPLOYMENT = "fleet.deployment"
LABEL_REVISION = "fleet.revision"
LABEL_SLOT = "fleet.slot"

# Engine facts from /info (storage driver, OS) change only when the engine is
# reconfigured; /version is called on every engine_info() and refreshes them when the
# engine's version changes, /info at most this often otherwise.
ENGINE_FACTS_TTL_S = 300.0
MAX_ERROR_CHARS = 300


class DockerDriver:
    """A lazily connected client of one Docker engine.

    ``base_url`` None means the environment's engine (``DOCKER_HOST`` or the default unix
    socket). No connection is made until the first call; a failed connection is retried
    on the next call.
    """

    def __init__(self, base_url: str | None = None, timeout: float = 5) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: DockerClient | None = None
        self._lock = threading.Lock()
        self._engine_facts: dict[str, Any] | None = None
        self._engine_facts_key: tuple[Any, ...] | None = None
        self._engine_facts_at = 0.0

    # ------------------------------------------------------------------ connection

    def _connect(self) -> DockerClient:
        with self._lock:
            if self._client is None:
                with _translated_errors("connect to the Docker engine"):
                    # Both negotiate the API version with the engine, so they connect now.
                    if self.base_url is None:
                        self._client = from_env(timeout=self.timeout)
                    else:
                        self._client = DockerClient(base_url=self.base_url, timeout=self.timeout)
            return self._client

    def sdk(self) -> DockerClient:
        """The connected SDK client, for the agent's container code (``containers.py``)."""
        return self._connect()

    def close(self) -> None:
        """Drop the connection pool; the next call reconnects."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> DockerDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ engine

    def engine_info(self) -> dict[str, Any]:
        """What the engine is; never raises. Unreachable gives ``reachable: False`` + ``error``."""
        try:
            client = self._connect()
            with _translated_errors("read the Docker engine version"):
                version = client.version()
            key = (version.get("Version"), version.get("ApiVersion"), version.get("GitCommit"))
            now = time.monotonic()
            if (
                self._engine_facts is None
                or key != self._engine_facts_key
                or now - self._engine_facts_at > ENGINE_FACTS_TTL_S
            ):
                with _translated_errors("read the Docker engine info"):
                    info = client.info()
                self._engine_facts = {
                    "os": info.get("OperatingSystem") or version.get("Os"),
                    "kernel": info.get("KernelVersion") or version.get("KernelVersion"),
                    "storage_driver": info.get("Driver"),
                }
                self._engine_facts_key = key
                self._engine_facts_at = now
        except (DockerUnavailable, DockerError) as exc:
            return {
                "reachable": False,
                "version": None,
                "api_version": None,
                "os": None,
                "kernel": None,
                "storage_driver": None,
                "error": exc.message,
            }
        return {
            "reachable": True,
            "version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            **self._engine_facts,
            "error": None,
        }

    # ------------------------------------------------------------------ containers

    def list_managed(self, node_id: str) -> list[dict[str, Any]]:
        """Containers (running or not) labelled as managed by the fleet for ``node_id``.

        One engine call (the container summaries), so it is cheap enough for every heartbeat.
        """
        client = self._connect()
        filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"]}
        with _translated_errors("list containers"):
            summaries = client.api.containers(all=True, filters=filters)
        return [_container_from_summary(summary) for summary in summaries]


def _container_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    names = summary.get("Names") or []
    created = summary.get("Created")
    return {
        "id": summary["Id"][:12],
        "name": names[0].lstrip("/") if names else "",
        # The reference the container was created from; an image id once that tag moved.
        "image": summary.get("Image") or summary.get("ImageID") or "",
        "state": summary.get("State") or "",
        "status": summary.get("Status") or "",
        "created": (
            datetime.fromtimestamp(created, tz=UTC).isoformat().replace("+00:00", "Z")
            if created
            else None
        ),
        "labels": {
            key: value
            for key, value in (summary.get("Labels") or {}).items()
            if key.startswith(LABEL_PREFIX)
        },
    }


@contextmanager
def _translated_errors(action: str) -> Iterator[None]:
    """Turn Docker SDK and transport exceptions into the adapter's two error types."""
    try:
        yield
    except APIError as exc:
        explanation = exc.explanation or str(exc)
        raise DockerError(
            _short(f"cannot {action}: {explanation}"), retryable=exc.is_server_error()
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, OSError) as exc:
        raise DockerUnavailable(_short(f"cannot {action}: {exc}")) from exc
    except DockerException as exc:
        # The SDK wraps a failed API-version negotiation in a bare DockerException.
        if _caused_by_transport(exc):
            raise DockerUnavailable(_short(f"cannot {action}: {exc}")) from exc
        raise DockerError(_short(f"cannot {action}: {exc}"), retryable=False) from exc


translated_errors = _translated_errors


def _caused_by_transport(exc: BaseException) -> bool:
    seen: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(10):  # a chain is short; never loop on a cyclic one
        if seen is None:
            return False
        if isinstance(
            seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout | OSError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"
