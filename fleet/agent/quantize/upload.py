"""Upload of the outputs into the fleet model store, over the control plane's API.

``GET  /api/v1/agent/jobs/<id>/outputs/<sha256>/`` says whether the store has the blob
already (a resumed job does not send it twice); ``PUT`` streams the file, which the control
plane verifies (size and sha256) before it enters the store. Node credential; only the node
holding the job's lease may upload for it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO

import requests

from fleet.agent.client import ServerClient
from fleet.agent.quantize.spec import QuantizeError

UPLOAD_CHUNK = 1024 * 1024
UPLOAD_ATTEMPTS = 3
READ_TIMEOUT_S = 300


class _Body:
    """A file as an upload body that counts what was sent and checks for cancel."""

    def __init__(self, handle: IO[bytes], size: int, on_chunk: object) -> None:
        self.handle = handle
        self.size = size
        self.sent = 0
        self.on_chunk = on_chunk

    def __iter__(self):  # type: ignore[no-untyped-def]
        while chunk := self.handle.read(UPLOAD_CHUNK):
            self.sent += len(chunk)
            if callable(self.on_chunk):
                self.on_chunk(self.sent / self.size if self.size else 1.0)
            yield chunk

    def __len__(self) -> int:
        return self.size


def _url(client: ServerClient, job_id: int, sha256: str) -> str:
    return f"{client.server}/api/v1/agent/jobs/{job_id}/outputs/{sha256}/"


def _headers(client: ServerClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.credential}"} if client.credential else {}


def upload(
    client: ServerClient,
    job_id: int,
    path: Path,
    sha256: str,
    relative: str,
    on_progress: object = None,
) -> bool:
    """Put ``path`` in the store; False when it was there already."""
    url = _url(client, job_id, sha256)
    size = path.stat().st_size
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            probe = client.session.get(
                url, headers=_headers(client), timeout=30, verify=client.verify
            )
            if probe.status_code == 200 and probe.json().get("stored"):
                return False
            _refused(probe, relative)
            with path.open("rb") as handle:
                answer = client.session.put(
                    url,
                    data=_Body(handle, size, on_progress),
                    headers={
                        **_headers(client),
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                        "X-Output-Path": relative,
                    },
                    timeout=(10, READ_TIMEOUT_S),
                    verify=client.verify,
                )
            if answer.status_code in (200, 201):
                return True
            _refused(answer, relative)
            raise requests.exceptions.ConnectionError(f"server answered {answer.status_code}")
        except requests.exceptions.RequestException as exc:
            if attempt == UPLOAD_ATTEMPTS:
                raise QuantizeError(
                    f"Uploading {relative} to the fleet store failed {UPLOAD_ATTEMPTS} times "
                    f"({exc}); the output is kept on the node and the job retries later.",
                    retryable=True,
                    code="upload_failed",
                ) from None
            time.sleep(min(10.0, 2.0 * attempt))
    return True


def _refused(response: requests.Response, relative: str) -> None:
    if response.status_code < 400 or response.status_code >= 500:
        return
    try:
        detail = response.json().get("detail", response.text[:300])
    except ValueError:
        detail = response.text[:300]
    if response.status_code == 409:  # the lease moved on: someone else has the job
        raise QuantizeError(
            f"The control plane refused {relative}: {detail}", retryable=False, code="lease_lost"
        )
    raise QuantizeError(
        f"The control plane refused the upload of {relative} ({response.status_code}): {detail}",
        retryable=response.status_code == 507,
        code="upload_refused",
    )
