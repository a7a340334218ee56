"""`scripts/run` itself, in a browser: a model imported and deployed from the console, and the
deployment page showing its replica turn available without a reload.

The embedded mode as a user gets it: SQLite, the Valkey server runfleet starts, web, worker,
beat and the local node's agent on the real Docker engine, the tiny GGUF from the test hub,
the locally built llama-server image, Debian's Chromium. "Available" is decided by a reconcile
pass in the worker (the agent's health report only nudges one), so the message that turns the
badge comes from another process than the web server's: the shared Channels layer carries it.
The page's own safety poll (every 30 s) is not what updates it: the test records the messages
its WebSocket received and that the page was never reloaded.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.hubserver.repos import add_repo
from tests.ports import free_port
from tests.smoke.run_command import (
    embedded_environ,
    kill_everything,
    read_log,
    start,
    stop,
    wait_until_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]

PASSWORD = "embedded-live-admin-password-2024"
LICENCE_CARD = b"---\nlicense: apache-2.0\n---\n# A tiny test model\n"
# Every WebSocket message the page receives, parsed, in window.__live (set before any script).
RECORD_MESSAGES = """
(() => {
  window.__live = [];
  window.__sameDocument = true;
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const socket = new Native(url, protocols);
    socket.addEventListener('message', (event) => {
      try { window.__live.push(JSON.parse(event.data)); } catch (e) { /* not JSON */ }
    });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


def _remove_containers(client: docker.DockerClient, name: str) -> None:
    for container in client.containers.list(all=True, filters={"label": "fleet.managed=true"}):
        if name in container.name:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def test_a_deployment_made_in_the_console_turns_available_live(
    tmp_path: Path, hub_root: Path, upstream_hub: str, tiny_gguf: Path, llama_server_image: str
):
    from playwright.sync_api import sync_playwright

    repo = f"acme/embedded-live-{uuid.uuid4().hex[:6]}"
    add_repo(hub_root, repo, [{"tiny-F16.gguf": tiny_gguf, "README.md": LICENCE_CARD}])
    name = f"live-{uuid.uuid4().hex[:6]}"
    state_dir, log_path, port = tmp_path / "state", tmp_path / "run.log", free_port()
    base = f"http://127.0.0.1:{port}"
    env = embedded_environ(
        state_dir,
        port,
        PASSWORD,
        FLEET_HF_ENDPOINT=upstream_hub,
        FLEET_IMAGE_LLAMACPP=llama_server_image,
    )
    client = docker.from_env()
    proc = start(env, log_path)
    try:
        wait_until_ready(proc, base, log_path)
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.add_init_script(RECORD_MESSAGES)

                page.goto(f"{base}/login/")
                page.fill("#id_username", "admin")
                page.fill("#id_password", PASSWORD)
                with page.expect_navigation():
                    page.click("form button[type=submit]")

                # Import from the (test) hub in the console: pinned, licence read from the card.
                page.goto(f"{base}/catalog/import/")
                page.fill("#id_repo_id", repo)
                with page.expect_navigation():
                    page.click('[data-testid="import-form"] button[type=submit]')
                assert f"{repo} imported" in page.content(), page.content()[:3000]

                # The local node joined by itself (runfleet's agent); wait for it to be ready.
                status = page.locator('tr[data-node="local"] [data-testid="node-status"]')
                deadline = time.monotonic() + 90
                page.goto(f"{base}/nodes/")
                while not (status.count() and status.inner_text() == "ready"):
                    assert time.monotonic() < deadline, read_log(log_path)[-5000:]
                    time.sleep(1)
                    page.goto(f"{base}/nodes/")

                page.goto(f"{base}/deployments/new/")
                page.fill("#id_name", name)
                option = page.locator("#id_variant option", has_text=repo).first
                page.select_option("#id_variant", value=option.get_attribute("value"))
                page.select_option("#id_runtime", value="llamacpp")
                page.fill("#id_runtime_args", '{"context_size": 256, "threads": 1}')
                page.fill("#id_replicas", "1")
                page.fill("#id_min_healthy_seconds", "2")
                page.fill("#id_reason", "embedded live smoke test")
                with page.expect_navigation():
                    page.click("form:has(#id_name) button[type=submit]")
                assert "/deployments/" in page.url and "/new/" not in page.url, page.content()

                page.wait_for_selector("#live-status.connected", timeout=15_000)
                badge = "#deployment-live tr[data-replica] .badge"
                page.wait_for_function(
                    f"""() => {{
                        const badge = document.querySelector('{badge}');
                        return badge && badge.textContent.trim() === 'available';
                    }}""",
                    timeout=180_000,
                )
                live = page.evaluate("window.__live")
                states = [
                    m.get("payload", {}).get("state")
                    for m in live
                    if str(m.get("type", "")).startswith("deployment.")
                ]
                assert "available" in states, (live, read_log(log_path)[-5000:])
                assert page.evaluate("window.__sameDocument") is True  # never reloaded
                assert errors == []
            finally:
                chromium.close()
        stop(proc, log_path, timeout=60)
    finally:
        if proc.poll() is None:
            kill_everything(proc, log_path)
        _remove_containers(client, name)
        client.close()
