"""The agent's HTTP client for the control plane's API (node credential, retries, reasons)."""

from __future__ import annotations

import random
from typing import Any

import requests

from fleet.agent.errors import AdapterError

TIMEOUT_S = 10


class ServerRefused(Exception):
    """The server answered and said no (4xx); retrying will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ServerUnreachable(AdapterError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - jitter, not crypto


class ServerClient:
    def __init__(self, server: str, *, ca_file: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "slm-fleet-agent"
        self.verify: bool | str = ca_file or True
        self.credential: str | None = None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.server}{path}"
        headers = {}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        try:
            response = self.session.post(
                url, json=body, headers=headers, timeout=TIMEOUT_S, verify=self.verify
            )
        except requests.exceptions.SSLError as exc:
            raise ServerUnreachable(f"TLS failure talking to {self.server}: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(f"cannot connect to {self.server}: {exc}") from None
        except requests.exceptions.Timeout:
            raise ServerUnreachable(f"{self.server} did not answer within {TIMEOUT_S} s") from None
        if response.status_code >= 500:
            raise ServerUnreachable(f"{self.server} answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            if response.ok:
                raise ServerUnreachable(
                    f"{url} did not answer with JSON; is --server right?"
                ) from None
            data = {"detail": response.text[:200]}
        if response.status_code == 404:
            raise ServerRefused(404, f"{url} does not exist; is --server the SLM Fleet URL?")
        if not response.ok:
            raise ServerRefused(response.status_code, str(data.get("detail", data)))
        return dict(data)

    def join(self, join_token: str, name: str, inventory: dict[str, Any]) -> dict[str, Any]:
        return self._post(
            "/api/v1/agent/join/", {"join_token": join_token, "name": name, "inventory": inventory}
        )

    def heartbeat(self, inventory: dict[str, Any]) -> dict[str, Any]:
        return self._post("/api/v1/agent/heartbeat/", inventory)

    def command_result(
        self, command_id: int, *, result: dict[str, Any] | None, error: str | None
    ) -> dict[str, Any]:
        return self._post(
            f"/api/v1/agent/commands/{command_id}/result/", {"result": result, "error": error}
        )

    def replica_status(self, replica_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """A replica's state as this node sees it (starting, healthy, failed, stopped)."""
        return self._post(f"/api/v1/agent/replicas/{replica_id}/status/", body)

    def send_metrics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of metric rounds (fleet.agent.metrics); the answer counts what was stored."""
        return self._post("/api/v1/agent/metrics/", batch)

    def release_jobs(self) -> dict[str, Any]:
        """After a restart: hand back the jobs this node held so they are sent again now."""
        return self._post("/api/v1/agent/jobs/release/", {})
