"""The locally built llama-server image serves the tiny model like the official image would."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first build takes ~5 min


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _post(url: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_llama_server_image_serves_the_tiny_model(
    llama_server_image: str, tiny_gguf: Path, request: pytest.FixtureRequest
):
    timings: dict[str, float] = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-m", "/models/model.gguf", "--port", str(port), "--host", "127.0.0.1"]
    args += ["--metrics", "-c", "512", "-t", "1"]
    client = docker.from_env(timeout=30)
    request.addfinalizer(client.close)
    started = time.perf_counter()
    container = client.containers.run(
        llama_server_image,
        args,
        detach=True,
        network_mode="host",  # FACTS: never the default bridge
        init=True,  # a quick stop: PID 1 forwards SIGTERM
        cap_drop=["ALL"],
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        security_opt=["no-new-privileges"],
        user="65534:65534",
        mem_limit="1g",
        volumes={str(tiny_gguf): {"bind": "/models/model.gguf", "mode": "ro"}},
        labels={"io.slm-fleet.test": "tests/runtimes/test_llama_image.py"},
    )
    container_id = container.id

    def remove() -> None:  # by id, whatever happened above
        step = time.perf_counter()
        leftover = client.containers.get(container_id)
        leftover.stop(timeout=5)
        leftover.remove(force=True)
        timings["stop+remove"] = time.perf_counter() - step
        print(
            "\nllama-server container: "
            + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
        )

    request.addfinalizer(remove)
    timings["run"] = time.perf_counter() - started

    step = time.perf_counter()
    status, body = 0, ""
    while time.perf_counter() - step < 30:
        try:
            status, body = _get(f"{base}/health", timeout=2)
        except OSError:
            status = 0
        if status == 200:
            break
        container.reload()
        assert container.status in ("created", "running"), container.logs(tail=40).decode()
        time.sleep(0.05)
    assert status == 200, f"/health answered {status} {body}: " + container.logs(tail=40).decode(
        errors="replace"
    )
    timings["health"] = time.perf_counter() - step

    step = time.perf_counter()
    answer = _post(
        f"{base}/completion",
        {"prompt": "The quick brown fox", "n_predict": 8, "ignore_eos": True},
    )
    timings["completion"] = time.perf_counter() - step
    assert answer["tokens_predicted"] > 0, answer
    assert answer["tokens_predicted"] <= 8, answer
    assert answer["stop_type"] == "limit", answer  # ignore_eos: it stops at n_predict

    step = time.perf_counter()
    status, metrics = _get(f"{base}/metrics")
    timings["metrics"] = time.perf_counter() - step
    assert status == 200, metrics
    assert "llamacpp:tokens_predicted_total" in metrics
    predicted = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("llamacpp:tokens_predicted_total")
    ]
    assert predicted and predicted[0] >= answer["tokens_predicted"], metrics
