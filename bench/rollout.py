#!/usr/bin/env python
"""Deployment start benchmark: API call → replica healthy, against a raw ``docker run``.

    .venv/bin/python bench/rollout.py [--rounds 20] [--web-workers 1]

What it does (everything on 127.0.0.1; everything it starts is stopped by PID, containers
removed by id, its database dropped, its Redis database 13 flushed, its temp dir removed):

1. the locally built ``slm-fleet/llama-server`` image and the tiny GGUF (scripts/llama_cpp.py,
   cached); the test upstream hub (tests/hubserver) in a thread, serving that GGUF;
2. creates the database ``fleet_bench_ro_<pid>``, migrates it; starts uvicorn
   (``FLEET_ENV=production``), a control Celery worker (``-Q control,celery``) and beat, and
   one real agent (``manage.py fleet_agent``) joined with a join token;
3. imports the model into the catalog (``models_catalog.services.import_model``) and puts
   the variant on the node with a real download job (not timed);
4. one warm-up deployment (not counted); then ``--rounds`` rounds, alternating which goes
   first: **fleet**: ``POST /api/v1/deployments/`` with a write-scope API token → the
   replica row's state is ``healthy`` (the agent's report), then the deployment is deleted
   through the API and its container waited away; **raw**: the
   identical ContainerSpec (the fleet replica's, renamed, on another free port) through the
   agent's own ``run_arguments`` and the Docker SDK + the same 50 ms health polling, then
   removed.

The fleet round ends at the replica's ``healthy_since`` stamp: the moment the control plane
records the agent's healthy report (same machine, same clock as the API call's start). The
bench learns of it like the console's detail page, on the deployment's live group
``deployment.<id>`` (Redis pub/sub): a replica notice that says healthy triggers one look at
the replica rows, with a look every ``--poll-ms`` (250) as well in case a notice is lost.
The observer stays off the CPU while the container starts: querying the database on every
notice, or every 5-20 ms as this bench once did, took CPU from the processes being timed.
``observed`` minus ``healthy_applied`` in the phases is what observing adds. API calls go over
one kept-alive connection, as a client that manages deployments keeps one.

The last line of output is one JSON object with the figures (``rounds``, ``fleet_p50_ms``,
``fleet_p99_ms``, ``raw_p50_ms``, ``overhead_p50_ms``, ``ratio_p50``, ...). Targets: median
overhead ≤ 500 ms and ratio ≤ 1.3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    PY,
    Proc,
    admin_token,
    create_database,
    drop_database,
    flush_redis,
    free_port,
    llama_cpp_script,
    log,
    migrate_and_flush,
    percentile,
    production_env,
    setup_django,
    stop_all,
    wait_for,
)
from _download_support import REDIS_URL  # noqa: E402
from _services import Missing, services  # noqa: E402

TARGETS = {"overhead_p50_ms": 500.0, "ratio_p50": 1.3}
REPO_ID = "bench/tiny-llama-gguf"
AGENT_NAME = "bench-rollout"


class LiveNotices:
    """Healthy replicas of the watched deployment (its ``deployment.<id>`` live group), on a
    thread with its own loop. Only a notice whose payload says healthy makes the bench look
    at the database: an observer that queried on every notice took CPU from the container
    start it was timing (2 cores shared by the control plane, the engine and the bench)."""

    def __init__(self) -> None:
        import asyncio
        import queue
        import threading

        self.ids: queue.Queue[int] = queue.Queue()
        self.ready = threading.Event()
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.layer: Any = None
        self.channel = ""
        self.thread = threading.Thread(target=self._run, name="live-notices", daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("could not open a channel on the live layer")

    def _run(self) -> None:
        self.loop.run_until_complete(self._listen())

    async def _listen(self) -> None:
        import asyncio

        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.channel = await self.layer.new_channel()
        self.ready.set()
        while not self.stopping:
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), 0.5)
            except TimeoutError:
                continue
            payload = message.get("payload") or {}
            if message.get("type") == "deployment.replica" and payload.get("state") in (
                "healthy",
                "available",
            ):
                self.ids.put(int(payload["deployment"]))

    def _in_loop(self, coroutine: Any) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def watch(self, deployment_id: int) -> None:
        self._in_loop(self.layer.group_add(f"deployment.{deployment_id}", self.channel))

    def unwatch(self, deployment_id: int) -> None:
        self._in_loop(self.layer.group_discard(f"deployment.{deployment_id}", self.channel))

    def wait(self, deployment_id: int, timeout: float) -> None:
        """Until a healthy notice about ``deployment_id`` or ``timeout`` seconds."""
        import queue

        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            try:
                if self.ids.get(timeout=left) == deployment_id:
                    return
            except queue.Empty:
                return

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-ro-"))
        self.db = f"fleet_bench_ro_{os.getpid()}"
        self.db_created = False
        self.redis_used = False
        self.procs: list[Proc] = []
        self.containers: set[str] = set()
        self.hub_stop: Any = None
        self.port = 0
        self.token = ""
        self.node_id = 0
        self.variant_id = 0
        self.image = ""
        self.docker: Any = None
        self.data_dir = self.tmp / "agent"
        self.phases: list[dict[str, float]] = []
        self.raw_run: list[float] = []
        self.notices: LiveNotices | None = None
        self.session: Any = None

    # --- setup ---
    def env(self, hub_url: str) -> dict[str, str]:
        env, self.added = production_env(
            self.tmp,
            self.db,
            REDIS_URL,
            drop_hf=True,
            FLEET_MODEL_STORE=str(self.tmp / "store"),
            FLEET_MIRROR_ACCEL_REDIRECT="",
            FLEET_HF_ENDPOINT=hub_url,
            FLEET_IMAGE_LLAMACPP=self.image,
        )
        env.update(HF_HOME=str(self.tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
        return env

    def prepare(self) -> None:
        import docker

        from tests.hubserver import tinymodel
        from tests.hubserver.repos import add_repo
        from tests.hubserver.server import run_in_thread

        script = llama_cpp_script()
        script.build(log=log)
        self.image = script.image(log=log)
        gguf = script.tiny_gguf(tinymodel.tiny_llama(), log=log)["F16"]
        hub_root = self.tmp / "hub"
        add_repo(hub_root, REPO_ID, [{"tiny-F16.gguf": gguf}])
        hub_url, self.hub_stop = run_in_thread(hub_root)
        self.environ = self.env(hub_url)
        self.docker = docker.from_env()
        create_database(self.db)
        self.db_created = True
        migrate_and_flush(self.environ, REDIS_URL)
        self.redis_used = True
        setup_django(self.environ)

    def start_processes(self) -> None:
        from core.choices import TokenScope
        from core.history import ChangeContext
        from fleet import services as fleet_services
        from fleet.models import Node

        _, self.token = admin_token(TokenScope.WRITE)
        ctx = ChangeContext.system("bench")
        self.port = free_port()
        argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--workers", str(self.args.web_workers)]
        self.procs.append(Proc("uvicorn", argv, self.environ, self.tmp / "uvicorn.log"))
        celery = [PY, "-m", "celery", "-A", "config"]
        worker = [*celery, "worker", "-Q", "control,celery", "-c", "2", "-n", f"{self.db}@%h"]
        beat = [*celery, "beat", "-s", str(self.tmp / "celerybeat-schedule")]
        self.procs.append(
            Proc("worker", [*worker, "-l", "info"], self.environ, self.tmp / "worker.log")
        )
        self.procs.append(Proc("beat", [*beat, "-l", "info"], self.environ, self.tmp / "beat.log"))
        wait_for(self._web_ready, 60, "uvicorn")
        _, join_key = fleet_services.create_join_token(ctx, name=AGENT_NAME, max_uses=1)
        agent_env = {k: v for k, v in self.environ.items() if k not in self.added}
        argv = [PY, "manage.py", "fleet_agent", "--server", f"http://127.0.0.1:{self.port}"]
        argv += ["--join-token", join_key, "--name", AGENT_NAME, "--data-dir", str(self.data_dir)]
        argv += ["--heartbeat-interval", "2"]
        self.procs.append(Proc("agent", argv, agent_env, self.tmp / "agent.log"))

        def joined() -> bool:
            for proc in self.procs:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            return Node.objects.filter(name=AGENT_NAME, last_heartbeat_at__isnull=False).exists()

        wait_for(joined, 120, "the agent to join", step=0.3)
        self.node_id = Node.objects.get(name=AGENT_NAME).pk
        log(f"uvicorn on {self.port}, worker, beat, agent (node {self.node_id}) running")

    def _web_ready(self) -> bool:
        import urllib.error
        import urllib.request

        if not self.procs[0].alive():
            raise RuntimeError(f"uvicorn exited:\n{self.procs[0].tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            return False

    def seed_model(self) -> None:
        from core.history import ChangeContext
        from core.jobs import Job, JobState
        from fleet.models import Node
        from models_catalog import services as catalog
        from models_catalog.downloads import put_variant_on_nodes
        from models_catalog.models import CatalogModel

        ctx = ChangeContext.system("bench")
        model = catalog.import_model(ctx, repo_id=REPO_ID)
        CatalogModel.objects.filter(pk=model.pk).update(licence="apache-2.0")
        variant = model.variants.order_by("name").first()
        assert variant is not None
        self.variant_id = variant.pk
        (job,) = put_variant_on_nodes(ctx, variant, [Node.objects.get(pk=self.node_id)])

        def done() -> bool:
            state = Job.objects.get(pk=job.pk).state
            if state in (JobState.FAILED, JobState.CANCELLED):
                raise RuntimeError(f"download job {job.pk} {state}")
            return state == JobState.SUCCEEDED

        wait_for(done, 120, "the variant's download to the node", step=0.2)
        log(f"variant {variant} on the node (job {job.pk})")

    # --- rounds ---
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        import requests

        if self.session is None:  # one keep-alive connection, as any API client keeps
            self.session = requests.Session()
        answer = self.session.request(
            method,
            f"http://127.0.0.1:{self.port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    def fleet_round(self, name: str) -> tuple[float, dict[str, Any]]:
        from deployments.models import Replica
        from deployments.replica_specs import container_spec

        spec = {
            "variant": self.variant_id,
            "runtime": "llamacpp",
            "replicas": 1,
            "runtime_args": {"context_size": 256, "threads": 1},
        }
        notices = self.notices = self.notices or LiveNotices()
        while not notices.ids.empty():  # earlier rounds' notices
            notices.ids.get_nowait()
        wall0 = time.time()
        started = time.perf_counter()
        status, body = self.api("POST", "/api/v1/deployments/", {"name": name, "spec": spec})
        if status != 201:
            raise RuntimeError(f"create answered {status}: {body}")
        api_s = time.perf_counter() - started
        deployment_id = int(body["id"])
        notices.watch(deployment_id)
        deadline = started + 60
        replica = None
        while time.perf_counter() < deadline:
            notices.wait(deployment_id, self.args.poll_ms / 1000)
            replica = (
                Replica.objects.select_related("revision", "deployment", "node")
                .filter(deployment_id=deployment_id, state__in=("healthy", "available"))
                .first()
            )
            if replica is not None:
                break
        notices.unwatch(deployment_id)
        observed = time.perf_counter() - started
        if replica is None:
            raise RuntimeError(f"{name}: no healthy replica within 60 s")
        self.phases.append(self._phases(replica, wall0, api_s, observed))
        # The replica is healthy when the control plane records the agent's report (its
        # healthy_since stamp, this machine's clock); the observer's own delay is left out.
        elapsed = replica.healthy_since.timestamp() - wall0
        raw_spec, _ = container_spec(replica)
        status, body = self.api("DELETE", f"/api/v1/deployments/{deployment_id}/")
        name_ = replica.container_name

        def gone() -> bool:
            # the low-level listing: the SDK's list() inspects each container and fails on
            # one that is being removed at that moment
            return not self.docker.api.containers(all=True, filters={"name": f"^/{name_}$"})

        wait_for(gone, 60, f"{name_} to be removed", step=0.05)
        return elapsed, raw_spec

    def _phases(self, replica: Any, wall0: float, api_s: float, elapsed: float) -> dict[str, float]:
        """Where one fleet round's time went (ms from the API call), from the rows' stamps
        and the agent's log line for the replica (its run/health timings)."""
        import ast
        import re

        def at(stamp: Any) -> float:
            return round((stamp.timestamp() - wall0) * 1000, 1) if stamp else -1.0

        phases = {
            "api_answered": round(api_s * 1000, 1),
            "deployment_row": at(replica.deployment.created_at),
            "revision_row": at(replica.revision.created_at),
            "replica_row": at(replica.created_at),
            "start_ordered": at(replica.started_at),
            "healthy_applied": at(replica.healthy_since),
            "observed": round(elapsed * 1000, 1),
        }
        nudged = re.compile(rf"reconciling deployment {replica.deployment_id}, nudged ([\d.]+) ms")
        with contextlib.suppress(OSError):
            for line in (self.tmp / "worker.log").read_text(errors="replace").splitlines():
                found = nudged.search(line)
                if found:  # the first pass, the one that placed the replica
                    phases["nudge_waited_ms"] = float(found.group(1))
                    break
        pattern = re.compile(rf"replica {replica.pk}: healthy (\{{.*\}})")
        with contextlib.suppress(OSError):
            for line in (self.tmp / "agent.log").read_text(errors="replace").splitlines():
                found = pattern.search(line)
                if found:
                    for key, value in ast.literal_eval(found.group(1)).items():
                        if key == "picked_at":
                            phases["agent_picked"] = round((float(value) - wall0) * 1000, 1)
                        else:
                            phases[f"agent_{key}"] = float(value)
        return phases

    def raw_round(self, spec: dict[str, Any], index: int) -> float:
        import requests

        from fleet.agent.containers import health_url, run_arguments, snapshot_dir, wait_healthy
        from models_catalog.models import Variant

        variant = Variant.objects.select_related("model").get(pk=self.variant_id)
        model_dir = snapshot_dir(self.data_dir, variant.model.repo_id, variant.model.commit_sha)
        port = free_port()
        spec = json.loads(json.dumps(spec))
        spec["name"] = f"bench-raw-{os.getpid()}-{index}"
        command = [str(c) for c in spec["command"]]
        old_port = command[command.index("--port") + 1]
        spec["command"] = [str(port) if c == old_port else c for c in command]
        spec["labels"] = {"bench": "raw"}  # not fleet-managed: the fleet must not touch it
        started = time.perf_counter()
        container = self.docker.containers.run(**run_arguments(spec, model_dir))
        self.raw_run.append(time.perf_counter() - started)
        self.containers.add(container.id)
        with requests.Session() as session:
            problem = wait_healthy(health_url(spec, port), started + 60, session=session)
        elapsed = time.perf_counter() - started
        if problem:
            raise RuntimeError(f"raw container not healthy: {problem}")
        container.remove(force=True)
        self.containers.discard(container.id)
        return elapsed

    def run(self) -> dict[str, Any]:
        _, spec = self.fleet_round("bench-warmup")
        self.raw_round(spec, 0)
        fleet: list[float] = []
        raw: list[float] = []
        for index in range(1, self.args.rounds + 1):
            if index % 2:
                elapsed, spec = self.fleet_round(f"bench-{index}")
                fleet.append(elapsed)
                raw.append(self.raw_round(spec, index))
            else:
                raw.append(self.raw_round(spec, index))
                elapsed, spec = self.fleet_round(f"bench-{index}")
                fleet.append(elapsed)
            log(f"round {index}: fleet {fleet[-1] * 1000:.0f} ms, raw {raw[-1] * 1000:.0f} ms")
        overheads = [f - r for f, r in zip(fleet, raw, strict=True)]
        fleet_p50 = statistics.median(fleet) * 1000
        raw_p50 = statistics.median(raw) * 1000
        figures = {
            "rounds": len(fleet),
            "fleet_p50_ms": round(fleet_p50, 1),
            "fleet_p99_ms": round((percentile(fleet, 99) or 0) * 1000, 1),
            "raw_p50_ms": round(raw_p50, 1),
            "raw_p99_ms": round((percentile(raw, 99) or 0) * 1000, 1),
            "overhead_p50_ms": round(statistics.median(overheads) * 1000, 1),
            "ratio_p50": round(fleet_p50 / raw_p50, 3),
            "targets": TARGETS,
        }
        figures["ok"] = (
            figures["overhead_p50_ms"] <= TARGETS["overhead_p50_ms"]
            and figures["ratio_p50"] <= TARGETS["ratio_p50"]
        )
        # where a fleet round's time went: ms after the API call (medians, warm-up left out)
        counted = self.phases[1:]
        keys = sorted({k for row in counted for k in row})
        figures["raw_run_p50_ms"] = round(statistics.median(self.raw_run[1:]) * 1000, 1)
        figures["phases_p50_ms"] = {
            k: round(statistics.median([row[k] for row in counted if k in row]), 1) for k in keys
        }
        return figures

    # --- cleanup ---
    def cleanup(self) -> None:
        if self.notices is not None:
            self.notices.stop()
        if self.session is not None:
            self.session.close()
        stop_all(self.procs, grace=10)
        if self.docker is not None:
            for cid in list(self.containers):
                with contextlib.suppress(Exception):
                    self.docker.containers.get(cid).remove(force=True)
            # the fleet's containers of this run, by id (node label = our node)
            if self.node_id:
                for container in self.docker.containers.list(
                    all=True, filters={"label": f"fleet.node={self.node_id}"}
                ):
                    if container.labels.get("fleet.deployment", "").startswith("bench-"):
                        with contextlib.suppress(Exception):
                            container.remove(force=True)
        if self.hub_stop is not None:
            with contextlib.suppress(Exception):
                self.hub_stop()
        if self.db_created:
            from django.db import connections

            connections.close_all()
            drop_database(self.db)
        if self.redis_used:
            flush_redis(REDIS_URL)
        keep = os.environ.get("BENCH_KEEP_LOGS")
        if keep:  # the processes' logs, for a look at where the time went
            Path(keep).mkdir(parents=True, exist_ok=True)
            for found in self.tmp.glob("*.log"):
                shutil.copy(found, Path(keep) / found.name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument(
        "--poll-ms", type=float, default=250.0, help="look at least this often (a lost notice)"
    )
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        with services("postgres", "redis", "docker", log=log):
            try:
                bench.prepare()
                bench.start_processes()
                bench.seed_model()
                figures = bench.run()
            finally:
                bench.cleanup()
    except Missing as exc:
        log(f"cannot run: {exc}")
        print(json.dumps({"error": str(exc), "ok": False}), flush=True)
        return 1
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
