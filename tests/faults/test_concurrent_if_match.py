"""100 concurrent If-Match writes to one deployment (issue 16): one winner per version.

The writers talk to the product's ASGI application under uvicorn (as in production), all
released at once by a barrier, each with the version it read and a change of its own. Per
round exactly one answers 200 and the other 99 get 412; the version goes up by one; the
deployment holds the winner's change; and history has the winner's events only, never a
second "updated" for the same version.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from core.models import HistoryEvent
from tests.browser.asgi import ServedAsgi
from tests.deployments import builders

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WRITERS = 100
ROUNDS = 3


def test_one_write_wins_per_version_and_the_rest_get_412(
    admin_user: Any, token_for: Any, purge_broker: None
) -> None:
    variant = builders.gguf_variant()
    builders.holds(builders.node("contended-node"), variant)
    deployment = builders.deploy(admin_user, "contended", variant)
    headers = {"Authorization": f"Bearer {token_for(admin_user)}"}

    with ServedAsgi() as server, ThreadPoolExecutor(WRITERS) as pool:
        url = f"{server.url}/api/v1/deployments/{deployment.pk}/"
        for round_no in range(ROUNDS):
            current = requests.get(url, headers=headers, timeout=30)
            assert current.status_code == 200, current.text
            version = int(current.headers["ETag"].strip('"'))
            barrier = threading.Barrier(WRITERS)

            def write(
                i: int, version: int = version, round_no: int = round_no, barrier: Any = barrier
            ) -> Any:
                request_id = f"w{round_no}x{i}x{uuid.uuid4().hex[:8]}"
                body = {"spec": {"env": {"WRITER": f"round {round_no} writer {i}"}}}
                barrier.wait(timeout=60)
                answer = requests.patch(
                    url,
                    json=body,
                    headers={**headers, "If-Match": f'"{version}"', "X-Request-ID": request_id},
                    timeout=120,
                )
                return i, request_id, answer

            results = list(pool.map(write, range(WRITERS)))
            codes = Counter(answer.status_code for _, _, answer in results)
            odd = [a.text[:200] for _, _, a in results if a.status_code not in (200, 412)]
            assert codes == {200: 1, 412: WRITERS - 1}, f"round {round_no}: {codes}; {odd[:3]}"
            (winner, winner_request, won) = next(r for r in results if r[2].status_code == 200)
            assert won.json()["version"] == version + 1
            stale = next(a for _, _, a in results if a.status_code == 412)
            assert f'"{version + 1}"' in stale.text or str(version) in stale.text, stale.text

            after = requests.get(url, headers=headers, timeout=30).json()
            assert after["version"] == version + 1
            assert after["spec"]["env"]["WRITER"] == f"round {round_no} writer {winner}"

            events = HistoryEvent.objects.filter(
                target_type="deployments.deployment", target_id=str(deployment.pk)
            ).exclude(request_id="")
            round_events = events.filter(request_id__startswith=f"w{round_no}x")
            assert set(round_events.values_list("request_id", flat=True)) == {winner_request}
            assert round_events.filter(verb="updated").count() == 1
