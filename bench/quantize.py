#!/usr/bin/env python
"""Quantize job benchmark: a whole GGUF quantize job against the same tools run directly.

    .venv/bin/python bench/quantize.py [--rounds 5] [--levels Q8_0,Q4_K_M]

What it does (everything on 127.0.0.1; everything it starts is stopped by PID, its database
dropped, its Redis database 11 flushed, its temp dir removed):

1. the llama.cpp tools (scripts/llama_cpp.py, cached) and a ~100 MB float32 Llama
   (tests/quantize/models.py ``bench_llama``: hidden 512, 8 layers, SentencePiece; cached),
   published on the test upstream hub (tests/hubserver) in a thread;
2. creates the database ``fleet_bench_qz_<pid>``, migrates it; starts uvicorn
   (``FLEET_ENV=production``), a control Celery worker (the cache job) and one real agent
   (``manage.py fleet_agent``) with ``FLEET_LLAMA_CPP_TOOLS`` pointing at the tools;
3. imports the model; one warm-up job (not counted: it caches the source in the fleet store
   and brings it to the node);
4. ``--rounds`` rounds, alternating which goes first: **job**: ``POST /api/v1/quantize/``
   (GGUF, ``--levels``, evaluation on) → the job row ``succeeded`` (polled every 20 ms), the
   outputs registered; then its variants, files and store blobs are deleted so that the next
   round makes them again; **direct**: the same tool commands, in the same order, on the
   same source folder in the agent's hub cache, without the fleet: ``convert_hf_to_gguf.py``
   → F16, ``llama-perplexity`` of F16, then per level ``llama-quantize``,
   ``llama-perplexity`` and the ``llama-server`` generation for tokens/s.

The last line of output is one JSON object with the figures (``job_s``, ``direct_s`` (the
medians), ``ratio`` (the median of the per-round job/direct ratios: adjacent runs share the
machine's load), ``ratio_of_medians``, per-round lists, ``job_breakdown_s`` and
``job_over_own_tools`` (each job's wall time over the tool time measured inside it, which
load drift between the paired runs does not move), ...). Target: ratio ≤ 1.2.
"""

from __future__ import annotations

import argparse
import contextlib
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
    production_env,
    run_bench,
    setup_django,
    stop_all,
    wait_for,
)

REDIS_URL = "redis://127.0.0.1:6379/11"
TARGETS = {"ratio": 1.2}
REPO_ID = "bench/llama-100m"
AGENT_NAME = "bench-quantize"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.levels = [x.strip() for x in args.levels.split(",") if x.strip()]
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-qz-"))
        self.db = f"fleet_bench_qz_{os.getpid()}"
        self.db_created = False
        self.redis_used = False
        self.procs: list[Proc] = []
        self.hub_stop: Any = None
        self.port = 0
        self.token = ""
        self.variant_id = 0
        self.tools: Path | None = None
        self.data_dir = self.tmp / "agent"
        self.model_bytes = 0
        self.breakdown: list[dict[str, float]] = []

    # --- setup ---
    def prepare(self) -> None:
        from tests.hubserver.repos import add_repo
        from tests.hubserver.server import run_in_thread
        from tests.quantize.models import bench_llama

        self.tools = llama_cpp_script().build(log=log)
        model_dir = bench_llama()
        files: dict[str, bytes | Path] = {p.name: p for p in model_dir.iterdir() if p.is_file()}
        files["README.md"] = b"---\nlicense: apache-2.0\n---\n# bench model\n"
        self.model_bytes = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
        log(f"source model {model_dir} ({self.model_bytes / 1e6:.0f} MB)")
        hub_root = self.tmp / "hub"
        add_repo(hub_root, REPO_ID, [files])
        hub_url, self.hub_stop = run_in_thread(hub_root)
        env, self.added = production_env(
            self.tmp,
            self.db,
            REDIS_URL,
            drop_hf=True,
            FLEET_MODEL_STORE=str(self.tmp / "store"),
            FLEET_MIRROR_ACCEL_REDIRECT="",
            FLEET_HF_ENDPOINT=hub_url,
        )
        env.update(HF_HOME=str(self.tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
        self.environ = env
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
        self.port = free_port()
        argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--workers", "1"]
        self.procs.append(Proc("uvicorn", argv, self.environ, self.tmp / "uvicorn.log"))
        worker = [PY, "-m", "celery", "-A", "config", "worker", "-Q", "control,celery", "-c", "1"]
        worker += ["-n", f"{self.db}@%h", "-l", "info"]
        self.procs.append(Proc("worker", worker, self.environ, self.tmp / "worker.log"))
        wait_for(self._web_ready, 60, "uvicorn")
        ctx = ChangeContext.system("bench")
        _, join_key = fleet_services.create_join_token(ctx, name=AGENT_NAME, max_uses=1)
        agent_env = {k: v for k, v in self.environ.items() if k not in self.added}
        agent_env["FLEET_LLAMA_CPP_TOOLS"] = str(self.tools)
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

    def _web_ready(self) -> bool:
        import urllib.error
        import urllib.request

        if not self.procs[0].alive():
            raise RuntimeError(f"uvicorn exited:\n{self.procs[0].tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def seed_model(self) -> None:
        from core.history import ChangeContext
        from models_catalog import services as catalog

        model = catalog.import_model(ChangeContext.system("bench"), repo_id=REPO_ID)
        variant = model.variants.get(name="original")
        self.variant_id = variant.pk

    # --- rounds ---
    def job_round(self) -> float:
        import requests

        from core.jobs import Job, JobState

        body = {"variant": self.variant_id, "format": "gguf", "levels": self.levels}
        started = time.perf_counter()
        answer = requests.post(
            f"http://127.0.0.1:{self.port}/api/v1/quantize/",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        if answer.status_code != 202:
            raise RuntimeError(f"quantize answered {answer.status_code}: {answer.text[:500]}")
        job_id = int(answer.json()["id"])
        while True:
            job = Job.objects.get(pk=job_id)
            if job.state == JobState.SUCCEEDED:
                break
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                raise RuntimeError(f"job {job_id} {job.state}: {job.error}\n{job.log_tail[-2000:]}")
            if time.perf_counter() - started > 1800:
                raise RuntimeError(f"job {job_id} still {job.state} after 30 min")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        result = job.result or {}
        tools_s = sum(float(v) for v in (result.get("durations") or {}).values())
        self.breakdown.append(
            {
                "agent_s": float(result.get("duration_s") or 0),
                "tools_s": tools_s,
                "outside_agent_s": elapsed - float(result.get("duration_s") or 0),
            }
        )
        self.forget_outputs()
        return elapsed

    def forget_outputs(self) -> None:
        """Delete the round's variants, their files and store blobs (made again next round)."""
        from models_catalog import store
        from models_catalog.models import ModelFile, StoredBlob, Variant

        made = Variant.objects.filter(parent_id=self.variant_id)
        rows = list(ModelFile.objects.filter(variants__in=made))
        made.delete()
        for row in rows:
            path = store.blob_path(row.sha256)
            with contextlib.suppress(FileNotFoundError):
                path.chmod(0o644)
                path.unlink()
            StoredBlob.objects.filter(sha256=row.sha256).delete()
            row.delete()

    def direct_round(self, index: int) -> float:
        from fleet.agent.quantize import evaluate, gguf
        from fleet.agent.quantize.spec import Limits
        from fleet.agent.quantize.tools import LlamaTools, ToolRunner
        from models_catalog.models import Variant
        from models_catalog.quantize.services import eval_text

        variant = Variant.objects.select_related("model").get(pk=self.variant_id)
        folder = (
            self.data_dir
            / "hub"
            / ("models--" + variant.model.repo_id.replace("/", "--"))
            / "snapshots"
            / variant.model.commit_sha
        )
        work = self.tmp / f"direct-{index}"
        work.mkdir()
        text = work / "eval.txt"
        text.write_text(eval_text()[0])
        tools = LlamaTools(self.tools or Path())
        runner = ToolRunner(Limits(), lambda: None, lambda line: None)
        started = time.perf_counter()
        gguf.convert(runner, tools, folder, work / "f16.gguf", lambda f: None)
        evaluate.perplexity(runner, tools, work / "f16.gguf", text, 128, lambda f: None)
        for level in self.levels:
            out = work / f"{level}.gguf"
            gguf.quantize(runner, tools, work / "f16.gguf", out, level, lambda f: None)
            evaluate.perplexity(runner, tools, out, text, 128, lambda f: None)
            evaluate.tokens_per_second(runner, tools, out, "The harbour woke before the sun.", 32)
        elapsed = time.perf_counter() - started
        shutil.rmtree(work)
        return elapsed

    def run(self) -> dict[str, Any]:
        self.prepare()
        self.start_processes()
        self.seed_model()
        warm = self.job_round()
        log(f"warm-up job (caches the source, brings it to the node): {warm:.1f} s")
        jobs: list[float] = []
        direct: list[float] = []
        for index in range(1, self.args.rounds + 1):
            if index % 2:
                jobs.append(self.job_round())
                direct.append(self.direct_round(index))
            else:
                direct.append(self.direct_round(index))
                jobs.append(self.job_round())
            log(f"round {index}: job {jobs[-1]:.2f} s, direct {direct[-1]:.2f} s")
        job_s, direct_s = statistics.median(jobs), statistics.median(direct)
        # Paired: each round's job against the direct run next to it (the machine's load
        # drifts between rounds); the median of those ratios is the figure.
        ratio = statistics.median(j / d for j, d in zip(jobs, direct, strict=True))
        return {
            "rounds": len(jobs),
            "levels": self.levels,
            "model_mb": round(self.model_bytes / 1e6, 1),
            "job_s": round(job_s, 3),
            "direct_s": round(direct_s, 3),
            "ratio": round(ratio, 3),
            "ratio_of_medians": round(job_s / direct_s, 3),
            "overhead_s": round(job_s - direct_s, 3),
            "jobs_s": [round(x, 3) for x in jobs],
            "directs_s": [round(x, 3) for x in direct],
            "warmup_s": round(warm, 2),
            # where a job's time went (medians, warm-up left out): the agent's time from its
            # claim to its report, the tools' own time within it, and the rest (API call,
            # dispatch, claim, finish, registration, polling)
            "job_breakdown_s": {
                key: round(statistics.median(row[key] for row in self.breakdown[1:]), 3)
                for key in ("agent_s", "tools_s", "outside_agent_s")
            },
            # each job's wall time over its own tools' time (measured inside the same job):
            # what orchestration costs, free of load drift between the paired runs
            "job_over_own_tools": round(
                statistics.median(
                    (row["agent_s"] + row["outside_agent_s"]) / row["tools_s"]
                    for row in self.breakdown[1:]
                    if row["tools_s"]
                ),
                3,
            ),
            "targets": TARGETS,
            "ok": ratio <= TARGETS["ratio"],
        }

    # --- cleanup ---
    def cleanup(self) -> None:
        stop_all(self.procs, grace=10)
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
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for found in self.tmp.glob("*.log"):
                shutil.copy(found, Path(keep) / found.name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levels", default="Q8_0,Q4_K_M")
    args = parser.parse_args(argv)
    return run_bench(Bench(args), time.monotonic())


if __name__ == "__main__":
    sys.exit(main())
