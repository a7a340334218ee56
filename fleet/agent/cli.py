"""``python manage.py fleet_agent`` / ``python -m fleet.agent``: join, heartbeat, run commands.

This module and everything it imports stay free of Django: the agent runs on hosts without
the control plane's settings and never touches its database.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery.signals import worker_ready

from fleet.agent import worker  # noqa: F401  (registers the agent's tasks on runtime.app)
from fleet.agent.client import ServerClient, ServerRefused, ServerUnreachable, backoff_delay
from fleet.agent.docker_driver import DockerDriver
from fleet.agent.inventory import collect_inventory
from fleet.agent.metrics.collector import Collector, MetricsLoop
from fleet.agent.runtime import Runtime, configure
from fleet.agent.state import AgentState
from fleet.agent.version import AGENT_VERSION

log = logging.getLogger("fleet.agent")

EXIT_REFUSED = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fleet_agent",
        description="SLM Fleet node agent: joins a control plane and runs its orders.",
    )
    parser.add_argument(
        "--server", required=True, help="control plane URL, e.g. https://fleet.example.com"
    )
    parser.add_argument(
        "--join-token",
        default=os.environ.get("FLEET_JOIN_TOKEN"),
        help="join token (first start only; or FLEET_JOIN_TOKEN)",
    )
    parser.add_argument(
        "--name",
        default=socket.gethostname().split(".")[0].lower(),
        help="node name (default: host name)",
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="where the agent keeps its state and models"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="seconds between heartbeats (default: what the server says)",
    )
    parser.add_argument(
        "--docker-url", default=None, help="Docker engine URL (default: from the environment)"
    )
    parser.add_argument(
        "--metrics-interval",
        type=float,
        default=float(os.environ.get("FLEET_AGENT_METRICS_INTERVAL", "5")),
        help="seconds between metric rounds (default 5; 0 turns metrics off)",
    )
    parser.add_argument(
        "--metrics-buffer-rounds",
        type=int,
        default=720,
        help="metric rounds kept while the control plane is unreachable (default 720)",
    )
    parser.add_argument(
        "--ca-file", default=None, help="CA bundle to verify the server's TLS certificate"
    )
    parser.add_argument(
        "--llama-cpp-tools",
        default=os.environ.get("FLEET_LLAMA_CPP_TOOLS"),
        help="folder with llama.cpp's tools and convert_hf_to_gguf.py, for quantize jobs "
        "(or FLEET_LLAMA_CPP_TOOLS; see docs/quantization.md)",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help="consume orders from this broker instead of the one the control plane named at "
        "join time (stored with the node's state; the embedded mode's local node gets it)",
    )
    parser.add_argument(
        "--broker-transport-options",
        type=json.loads,
        default=None,
        help="the broker's transport options as a JSON object (with --broker-url)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser.parse_args(argv)


def inventory(
    args: argparse.Namespace, node_id: str | None, docker: DockerDriver
) -> dict[str, Any]:
    return collect_inventory(
        data_dir=args.data_dir, docker=docker, node_id=node_id, agent_version=AGENT_VERSION
    )


def join(args: argparse.Namespace, client: ServerClient, docker: DockerDriver) -> AgentState:
    if not args.join_token:
        raise SystemExit(
            f"No node credential in {args.data_dir} and no --join-token given. Create a join token "
            "in the console (Nodes → Join tokens) and pass it with --join-token."
        )
    attempt = 0
    while True:
        try:
            joined = client.join(args.join_token, args.name, inventory(args, None, docker))
            break
        except ServerRefused as refused:
            raise SystemExit(
                f"The control plane refused to let this node join: {refused.detail}"
            ) from None
        except ServerUnreachable as exc:
            delay = backoff_delay(attempt)
            log.warning("cannot join yet: %s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            attempt += 1
    state = AgentState(
        server=args.server,
        node_id=joined["node_id"],
        name=joined["name"],
        credential=joined["credential"],
        queue=joined["queue"],
        broker_url=joined["broker_url"],
        broker_transport_options=joined.get("broker_transport_options") or {},
        heartbeat_interval_seconds=joined.get("heartbeat_interval_seconds", 5),
    )
    state.save(args.data_dir)
    log.info(
        "joined as node %s (id %s); credential stored in %s",
        state.name,
        state.node_id,
        args.data_dir,
    )
    return state


class Heartbeats(threading.Thread):
    """Sends inventory every interval; backs off while the server is unreachable."""

    def __init__(self, args: argparse.Namespace, state: AgentState) -> None:
        super().__init__(name="heartbeats", daemon=True)
        self.args = args
        self.state = state
        self.interval = args.heartbeat_interval or state.heartbeat_interval_seconds
        self.stopping = threading.Event()
        self.exit_message: str | None = None

    def run(self) -> None:
        client = ServerClient(self.args.server, ca_file=self.args.ca_file)
        docker = DockerDriver(base_url=self.args.docker_url)
        failures = 0
        while not self.stopping.is_set():
            client.credential = self.state.credential
            try:
                answer = client.heartbeat(inventory(self.args, str(self.state.node_id), docker))
            except ServerRefused as refused:
                if refused.status in (401, 403):
                    self.fatal(f"The control plane no longer accepts this node: {refused.detail}")
                    return
                log.error("heartbeat refused (%s): %s", refused.status, refused.detail)
                failures += 1
            except ServerUnreachable as exc:
                failures += 1
                delay = min(self.interval, backoff_delay(failures))
                log.warning("heartbeat failed: %s; retrying in %.1f s", exc, delay)
                self.stopping.wait(delay)
                continue
            except Exception:
                log.exception("heartbeat failed")
                failures += 1
            else:
                if failures:
                    log.info("control plane reachable again")
                failures = 0
                new_credential = answer.get("new_credential")
                if new_credential and new_credential != self.state.credential:
                    self.state.credential = new_credential
                    self.state.save(self.args.data_dir)
                    log.info("node credential rotated; the new one is stored")
                self.interval = self.args.heartbeat_interval or answer.get(
                    "interval_seconds", self.interval
                )
            self.stopping.wait(self.interval)

    def fatal(self, message: str) -> None:
        log.error("%s — stopping the agent.", message)
        self.exit_message = message
        os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown of the Celery worker


def metrics_loop(args: argparse.Namespace, state: AgentState) -> MetricsLoop | None:
    """The metrics thread (fleet.agent.metrics), or None with --metrics-interval 0."""
    if args.metrics_interval <= 0:
        log.info("metrics collection is off (--metrics-interval 0)")
        return None
    collector = Collector(
        server=args.server,
        data_dir=args.data_dir,
        node_id=str(state.node_id),
        ca_file=args.ca_file,
        docker_url=args.docker_url,
        buffer_rounds=args.metrics_buffer_rounds,
    )
    return MetricsLoop(collector, interval=args.metrics_interval)


def check_addresses(environ: Mapping[str, str]) -> None:
    """Refuse to start with an address the control plane would refuse in every heartbeat."""
    for name in ("FLEET_AGENT_ADDRESS", "FLEET_AGENT_REPLICA_BIND"):
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise SystemExit(
                f"{name}={value!r} is not an IP address. Replicas bind it and the control plane "
                "calls it: give the node's address (e.g. 10.0.0.5), or unset it."
            ) from None


def use_broker(
    state: AgentState, url: str | None, options: dict[str, Any] | None, data_dir: Path
) -> bool:
    """``--broker-url``: consume from ``url`` from now on (saved with the state). True when it
    changed what was stored."""
    if not url or (url == state.broker_url and (options or {}) == state.broker_transport_options):
        return False
    log.info(
        "orders now come from a %s broker (was %s)",
        url.split(":")[0],
        state.broker_url.split(":")[0],
    )
    state.broker_url = url
    state.broker_transport_options = options or {}
    state.save(data_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_addresses(os.environ)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s agent[%(threadName)s] %(message)s"
    )
    args.data_dir = args.data_dir.resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    client = ServerClient(args.server, ca_file=args.ca_file)
    docker = DockerDriver(base_url=args.docker_url)
    state = AgentState.load(args.data_dir)
    if state is None or state.server.rstrip("/") != args.server.rstrip("/"):
        state = join(args, client, docker)
    use_broker(state, args.broker_url, args.broker_transport_options, args.data_dir)
    docker.close()

    client.credential = state.credential
    try:
        released = client.release_jobs().get("released", [])
        if released:
            log.info("jobs %s held before a restart are resuming", released)
    except (ServerRefused, ServerUnreachable) as exc:  # the reconciler recovers them later
        log.warning("could not hand back earlier jobs now (%s); they resume after their lease", exc)

    Runtime.data_dir = args.data_dir
    Runtime.server = args.server
    Runtime.ca_file = args.ca_file
    Runtime.docker_url = args.docker_url
    Runtime.llama_cpp_tools = args.llama_cpp_tools
    app = configure(state)
    heartbeats = Heartbeats(args, state)
    metrics = metrics_loop(args, state)

    @worker_ready.connect(weak=False)
    def start_heartbeats(**_: Any) -> None:  # after the pool has forked its child
        heartbeats.start()
        if metrics is not None:
            metrics.start()

    log.info("node %s (id %s) consuming queue %s", state.name, state.node_id, state.queue)
    celery_worker = app.Worker(
        queues=[state.queue],
        concurrency=1,
        pool="prefork",
        hostname=f"agent-{state.name}@{socket.gethostname()}",
        loglevel=args.log_level,
        without_heartbeat=True,
        without_gossip=True,
        without_mingle=True,
    )
    celery_worker.start()
    heartbeats.stopping.set()
    if metrics is not None:
        metrics.stopping.set()
    if heartbeats.exit_message:
        print(f"fleet_agent: {heartbeats.exit_message}", file=sys.stderr)
        return EXIT_REFUSED
    return int(celery_worker.exitcode or 0)
