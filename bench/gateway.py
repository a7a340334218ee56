#!/usr/bin/env python
"""Gateway benchmark: the same llama.cpp replicas called through the gateway and directly.

    .venv/bin/python bench/gateway.py [--requests 300] [--duration 10] [--rounds 3]

What it does (everything on 127.0.0.1; whatever it starts is stopped by PID, containers
removed by id, its database dropped, its Redis database 12 flushed, its temp dir removed):

1. the locally built ``slm-fleet/llama-server`` image and the tiny GGUF (scripts/llama_cpp.py,
   cached); two llama-server containers (``--parallel 8``, one thread each, host network);
2. the database ``fleet_bench_gw_<pid>``, migrated; a node, a deployment ``bench`` whose two
   available replicas are those containers, an access key with request and token limits
   (high enough never to refuse, so every request pays the Redis limit check);
3. uvicorn serving ``config.asgi:application`` as production runs the web process
   (``FLEET_ENV=production``, PostgreSQL, Redis, httptools + uvloop, one worker): the
   gateway embedded, as ``scripts/run`` runs it.

Measured with one aiohttp client process (keep-alive connections, the same for both paths):

- **latency**: ``--requests`` non-streaming ``/v1/completions`` (``max_tokens`` 4), one at
  a time, gateway and direct interleaved request by request (direct alternates between the
  replicas). ``added_p50_ms`` / ``added_p99_ms`` = gateway percentile − direct percentile.
- **time to first byte** of streams: the same interleaving with ``stream: true`` (the client
  does not ask for usage, so the gateway rewrites the body to ask the runtime for it and
  filters that chunk out: its most expensive path); TTFB = first body bytes received.
- **throughput**: 32 concurrent clients in a closed loop for ``--duration`` seconds, direct
  and gateway alternating for ``--rounds`` rounds (order swapped every round);
  ``throughput_ratio`` = median gateway req/s ÷ median direct req/s. The clients are two
  ``wrk`` processes (16 connections each; C, a few µs of CPU a request) when wrk is installed
  (``scripts/test`` installs Debian's), else aiohttp in this process: a Python client spends
  more CPU a request than the tiny model's replicas, and on a small machine that CPU comes
  out of the replicas' share, so it would measure the client more than the gateway
  (``--client aiohttp`` forces it). Direct: one wrk per replica; gateway: both at the
  gateway.

``--separate-cpus`` emulates production's topology on one machine: the replicas' containers
get the last CPU (``cpuset``), the gateway's uvicorn and this client the others, for both
paths. Without it everything shares every CPU, so on a small machine the gateway's own work
is taken from the replicas (the ratio then measures CPU sharing as much as the gateway).

Targets (issue 8): added p50 ≤ 2 ms, added p99 ≤ 10 ms, throughput ratio ≥ 0.9, TTFB added
p50 ≤ 2 ms. The last output line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# ROOT first: this script's own name would otherwise hide the ``gateway`` package.
sys.path[:] = [
    str(ROOT),
    str(BENCH_DIR),
    *(p for p in sys.path if p not in (str(ROOT), str(BENCH_DIR))),
]

from _common import (  # noqa: E402
    PY,
    ControlPlaneBench,
    Proc,
    answers,
    exit_on_sigterm,
    free_port,
    llama_cpp_script,
    log,
    percentile,
    production_env,
    run_bench,
    summary,
    wait_for,
)

REDIS_URL = "redis://127.0.0.1:6379/12"
TARGETS = {
    "added_p50_ms": 2.0,
    "added_p99_ms": 10.0,
    "throughput_ratio": 0.9,
    "ttfb_added_p50_ms": 2.0,
}
CLIENTS = 32
BODY = {"model": "bench", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


def wrk_script(body: dict[str, Any]) -> str:
    """wrk's Lua: every request a JSON POST of ``body``; non-2xx answers are counted."""
    import json

    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{payload}'\n"
    )


async def run_wrk(
    wrk: str, base: str, script: Path, headers: dict[str, str], connections: int, seconds: float
) -> tuple[int, float]:
    """One wrk run (one thread) against ``base``; (requests, requests per second)."""
    import re

    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s"]
    argv += ["-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"{base}/v1/completions")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out = (await proc.communicate())[0].decode(errors="replace")
    # Requests still in flight when the run stops are counted as timeouts: at most one per
    # connection is that; more, or any other socket error or a non-2xx answer, is a failure.
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    broken = errors is not None and (
        any(int(n) for n in errors.groups()[:3]) or int(errors.group(4)) > connections
    )
    if proc.returncode != 0 or "Non-2xx" in out or broken:
        raise RuntimeError(f"wrk against {base} failed or saw errors:\n{out}")
    count = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not count or not rate:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return int(count.group(1)), float(rate.group(1))


class Bench(ControlPlaneBench):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="slm-bench-gw-"))
        self.db = f"fleet_bench_gw_{os.getpid()}"
        self.redis_url = REDIS_URL
        self.env, _ = production_env(self.tmp, self.db, REDIS_URL, FLEET_DB_CONN_MAX_AGE="60")
        self.procs: list[Proc] = []
        self.containers: list[str] = []
        self.docker: Any = None
        self.replica_ports: list[int] = []
        self.replica_cpus = ""
        self.other_cpus: set[int] = set()
        if args.separate_cpus:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise SystemExit("--separate-cpus needs at least 2 CPUs")
            self.replica_cpus = str(cpus[-1])
            self.other_cpus = set(cpus[:-1])
            os.sched_setaffinity(0, self.other_cpus)  # this client

    # --- set-up -----------------------------------------------------------------------------
    def start_replicas(self) -> None:
        import docker

        from tests.hubserver import tinymodel

        script = llama_cpp_script()
        script.build(log=log)
        image = script.image(log=log)
        gguf = script.tiny_gguf(tinymodel.tiny_llama(), log=log)["F16"]
        self.docker = docker.from_env()
        for _ in range(2):
            port = free_port()
            args = ["-m", "/models/model.gguf", "--host", "127.0.0.1", "--port", str(port)]
            args += ["-c", "2048", "-t", "1", "--parallel", "8", "--alias", "bench"]
            container = self.docker.containers.run(
                image,
                args,
                detach=True,
                cpuset_cpus=self.replica_cpus or None,
                network_mode="host",
                init=True,
                cap_drop=["ALL"],
                read_only=True,
                tmpfs={"/tmp": "rw,size=16m"},  # noqa: S108 - inside the container
                security_opt=["no-new-privileges"],
                user="65534:65534",
                volumes={str(gguf): {"bind": "/models/model.gguf", "mode": "ro"}},
                labels={"io.slm-fleet.bench": "bench/gateway.py"},
            )
            self.containers.append(container.id)
            self.replica_ports.append(port)
        for port in self.replica_ports:
            wait_for(answers(f"http://127.0.0.1:{port}/health"), 60, f"llama-server :{port}")
        log(f"replicas on ports {self.replica_ports}")

    def seed(self) -> str:
        from django.utils import timezone

        from core.history import ChangeContext
        from deployments import services as deployment_services
        from deployments.models import Replica
        from fleet.models import Node
        from gateway import services
        from tests.deployments.builders import gguf_variant, qwen

        ctx = ChangeContext.system("bench")
        node = Node.objects.create(
            name="bench-node",
            state="ready",
            last_heartbeat_at=timezone.now(),
            credential_prefix="slmn_x",
            credential_hash="bench-node",
            inventory={"host": {"hostname": "127.0.0.1"}, "cpu": {"cores": 2}, "gpus": []},
        )
        variant = gguf_variant(qwen("bench/tiny-gguf"))  # catalog rows; the replicas are real
        deployment = deployment_services.create_deployment(
            ctx, "bench", {"variant": variant.pk, "runtime": "llamacpp"}
        )
        for slot, port in enumerate(self.replica_ports):
            Replica.objects.create(
                deployment=deployment,
                revision=deployment.current_revision,
                slot=slot,
                node=node,
                host_port=port,
                state="available",
                available_at=timezone.now(),
            )
        _, secret = services.create_key(
            ctx, name="bench", requests_per_minute=10**8, tokens_per_minute=10**9
        )
        return secret

    def start_server(self) -> str:
        port = free_port()
        argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        argv += ["--no-access-log", "--log-level", "warning", "--no-server-header"]
        argv += ["--workers", str(self.args.workers)]
        if self.other_cpus:  # from its first thread on (taskset execs: same pid)
            taskset = shutil.which("taskset")
            if taskset is None:
                raise SystemExit("--separate-cpus needs taskset (util-linux)")
            argv = [taskset, "-c", ",".join(map(str, sorted(self.other_cpus))), *argv]
        proc = Proc("web", argv, self.env, self.tmp / "web.log")
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(answers(f"{url}/healthz"), 60, "uvicorn")
        return url

    # --- measuring --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        exit_on_sigterm()
        self.start_replicas()
        self.create_database()
        self.setup_django()
        key = self.seed()
        gateway = self.start_server()
        result = asyncio.run(self.measure(gateway, key))
        ok = (
            result["added_p50_ms"] <= TARGETS["added_p50_ms"]
            and result["added_p99_ms"] <= TARGETS["added_p99_ms"]
            and result["throughput_ratio"] >= TARGETS["throughput_ratio"]
            and result["ttfb_added_p50_ms"] <= TARGETS["ttfb_added_p50_ms"]
        )
        result["targets"] = TARGETS
        result["targets_met"] = ok
        return result

    async def measure(self, gateway: str, key: str) -> dict[str, Any]:
        import aiohttp
        import psutil

        body_json = {**BODY, "max_tokens": self.args.max_tokens}

        direct = [f"http://127.0.0.1:{p}" for p in self.replica_ports]
        auth = {"Authorization": f"Bearer {key}"}
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def complete(base: str, headers: dict[str, str]) -> float:
                started = time.perf_counter()
                async with session.post(
                    f"{base}/v1/completions", json=body_json, headers=headers
                ) as r:
                    data = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{base}: {r.status} {data[:200]!r}")
                return time.perf_counter() - started

            async def first_byte(base: str, headers: dict[str, str]) -> float:
                started = time.perf_counter()
                body = {**BODY, "stream": True, "max_tokens": 8}
                async with session.post(f"{base}/v1/completions", json=body, headers=headers) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{base}: {r.status} {await r.read()!r}")
                    await r.content.readany()
                    ttfb = time.perf_counter() - started
                    await r.read()
                return ttfb

            log("warm-up")
            for index in range(40):
                await complete(direct[index % 2], {})
                await complete(gateway, auth)
                await first_byte(gateway, auth)

            log(f"latency: {self.args.requests} interleaved pairs, one at a time")
            lat_gw: list[float] = []
            lat_direct: list[float] = []
            for index in range(self.args.requests):
                pair = [
                    ("gw", complete(gateway, auth)),
                    ("direct", complete(direct[index % 2], {})),
                ]
                if index % 2:
                    pair.reverse()
                for name, call in pair:
                    (lat_gw if name == "gw" else lat_direct).append(await call)

            log(f"time to first byte: {self.args.requests} interleaved stream pairs")
            ttfb_gw: list[float] = []
            ttfb_direct: list[float] = []
            for index in range(self.args.requests):
                pair = [
                    ("gw", first_byte(gateway, auth)),
                    ("direct", first_byte(direct[index % 2], {})),
                ]
                if index % 2:
                    pair.reverse()
                for name, call in pair:
                    (ttfb_gw if name == "gw" else ttfb_direct).append(await call)

            parent = psutil.Process(self.procs[0].pid)
            cpu_per_request: list[float] = []

            def server_cpu() -> float:  # the uvicorn process and its workers
                total = 0.0
                for proc in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
                return total

            async def closed_loop(target: str) -> float:
                stop_at = time.perf_counter() + self.args.duration
                done = 0
                cpu_before = server_cpu()

                async def worker(index: int) -> None:
                    nonlocal done
                    while time.perf_counter() < stop_at:
                        if target == "gw":
                            await complete(gateway, auth)
                        else:
                            await complete(direct[index % 2], {})
                        done += 1

                started = time.perf_counter()
                await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
                elapsed = time.perf_counter() - started
                if target == "gw":
                    cpu_per_request.append((server_cpu() - cpu_before) / max(done, 1))
                return done / elapsed

            wrk = shutil.which("wrk") if self.args.client != "aiohttp" else None
            if self.args.client == "wrk" and wrk is None:
                raise SystemExit("--client wrk: wrk is not installed (scripts/test installs it)")
            if wrk is not None:
                script = self.tmp / "post.lua"
                script.write_text(wrk_script(body_json))

                async def wrk_loop(target: str) -> float:
                    bases = direct if target == "direct" else [gateway, gateway]
                    headers = {} if target == "direct" else auth
                    cpu_before, done = server_cpu(), 0.0
                    runs = [
                        run_wrk(wrk, base, script, headers, CLIENTS // 2, self.args.duration)
                        for base in bases
                    ]
                    results = await asyncio.gather(*runs)
                    if target == "gw":
                        done = sum(count for count, _ in results)
                        cpu_per_request.append((server_cpu() - cpu_before) / max(done, 1))
                    return sum(rate for _, rate in results)

            rounds, seconds = self.args.rounds, self.args.duration
            client = "wrk" if wrk is not None else "aiohttp"
            log(f"throughput: {CLIENTS} clients ({client}), {rounds} rounds of {seconds} s")
            rps: dict[str, list[float]] = {"gw": [], "direct": []}
            for round_ in range(self.args.rounds):
                order = ["direct", "gw"] if round_ % 2 == 0 else ["gw", "direct"]
                for target in order:
                    rps[target].append(await (wrk_loop if wrk else closed_loop)(target))
                    log(f"  round {round_ + 1} {target}: {rps[target][-1]:.1f} req/s")

        def p(values: list[float], q: float) -> float:
            value = percentile(values, q)
            assert value is not None
            return value * 1000

        gw_rps, direct_rps = statistics.median(rps["gw"]), statistics.median(rps["direct"])
        return {
            "added_p50_ms": round(p(lat_gw, 50) - p(lat_direct, 50), 3),
            "added_p99_ms": round(p(lat_gw, 99) - p(lat_direct, 99), 3),
            "throughput_ratio": round(gw_rps / direct_rps, 3),
            "ttfb_added_p50_ms": round(p(ttfb_gw, 50) - p(ttfb_direct, 50), 3),
            "latency_gateway_ms": summary(lat_gw, 1000, 3),
            "latency_direct_ms": summary(lat_direct, 1000, 3),
            "ttfb_gateway_ms": summary(ttfb_gw, 1000, 3),
            "ttfb_direct_ms": summary(ttfb_direct, 1000, 3),
            "throughput_gateway_rps": round(gw_rps, 1),
            "throughput_direct_rps": round(direct_rps, 1),
            "throughput_rounds": {k: [round(v, 1) for v in vs] for k, vs in rps.items()},
            "gateway_cpu_ms_per_request": round(statistics.median(cpu_per_request) * 1000, 3),
            "max_tokens": self.args.max_tokens,
            "workers": self.args.workers,
            "clients": CLIENTS,
            "client": client,
            "replica_cpus": self.replica_cpus or "shared",
            "requests": self.args.requests,
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
        }

    # --- clean-up ---------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.release()
        for container_id in self.containers:
            with contextlib.suppress(Exception):
                self.docker.containers.get(container_id).remove(force=True)
        if self.docker is not None:
            self.docker.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--requests", type=int, default=300, help="pairs for latency and TTFB")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (each path)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--max-tokens", type=int, default=4, help="tokens generated per non-streaming request"
    )
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "aiohttp"],
        default="auto",
        help="throughput load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--separate-cpus",
        action="store_true",
        help="replicas on the last CPU, gateway and client on the others (production topology)",
    )
    started = time.monotonic()
    return run_bench(Bench(parser.parse_args()), started, needs=("postgres", "redis", "docker"))


if __name__ == "__main__":
    sys.exit(main())
