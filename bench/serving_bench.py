"""Serving benchmark accuracy: our load generator against guidellm on one llama.cpp replica.

One llama-server container (the locally built image, the tiny GGUF, one thread) serves both
clients. For each concurrency level and round, interleaved, our generator
(``benchmarks.loadgen``, the code the benchmark jobs run) and guidellm (from PyPI, in its
own cached virtualenv under ~/.cache/slm-fleet) send the same streamed /v1/completions
requests: same concurrency, request count, output length (``ignore_eos``), and prompts of
the same token count. Per level it prints both figures and the ratios ours/guidellm of
output tokens/s and TTFT p50 (target: within ±10 %), with each generator's own CPU use.
The last line is one JSON object with the medians over rounds and levels.

    .venv/bin/python bench/serving_bench.py                 # 3 rounds × concurrency 1, 2, 4
    .venv/bin/python bench/serving_bench.py --rounds 1 --levels 1   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [
    str(ROOT),
    str(BENCH_DIR),
    *(p for p in sys.path if p not in (str(ROOT), str(BENCH_DIR))),
]

from _common import free_port, llama_cpp_script, log, wait_for  # noqa: E402
from _services import Missing, services  # noqa: E402

from benchmarks import loadgen  # noqa: E402

GUIDELLM = "0.8.1"
SERVER_CPU = str((os.cpu_count() or 2) - 1)  # the last core
CLIENT_CPUS = set(range(max(1, (os.cpu_count() or 2) - 1)))  # the others
LABEL = "slm-fleet.bench=serving"


def guidellm_python() -> Path:
    """guidellm in its own virtualenv (its dependencies would clash with ours), cached."""
    venv = Path.home() / ".cache" / "slm-fleet" / f"guidellm-{GUIDELLM}"
    exe = venv / "bin" / "guidellm"
    if not exe.exists():
        log(f"installing guidellm {GUIDELLM} into {venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603
            [str(venv / "bin" / "pip"), "install", "-q", f"guidellm=={GUIDELLM}"], check=True
        )
    return exe


class Replica:
    def __init__(self, image: str, gguf: Path, threads: int, cpus: float) -> None:
        import docker

        self.client = docker.from_env(timeout=30)
        self.port = free_port()
        self.container = self.client.containers.run(
            image,
            [
                "-m",
                "/models/model.gguf",
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "-c",
                "1024",
                "-t",
                str(threads),
                "--parallel",
                "4",
                "--alias",
                "bench",
            ],
            detach=True,
            network_mode="host",
            init=True,
            read_only=True,
            tmpfs={"/tmp": "rw,size=16m"},  # noqa: S108 (inside the container)
            user="65534:65534",
            volumes={str(gguf): {"bind": "/models/model.gguf", "mode": "ro"}},
            labels={LABEL: "1"},
            # the server on its own core, the generators on the others: neither client
            # takes CPU from the server, so what differs is the measuring
            cpuset_cpus=SERVER_CPU,
            **({"nano_cpus": int(cpus * 1e9)} if cpus else {}),
        )
        import urllib.request

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:  # noqa: S310
                    return answer.status == 200
            except OSError:
                return False

        self.healthy = healthy
        wait_for(healthy, 60, "llama-server healthy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            self.container.remove(force=True)
        finally:
            self.client.close()


def ours(url: str, concurrency: int, requests: int, prompt_words: int, output: int) -> dict:
    target = loadgen.Target(url + "/v1", "bench")
    load = loadgen.Load(
        prompt_tokens=prompt_words, output_tokens=output, stream=True, api="completions"
    )
    level = loadgen.Level(concurrency=concurrency, requests=requests, warmup_requests=2)
    me = psutil.Process()
    cpu0, wall0 = sum(me.cpu_times()[:2]), time.monotonic()
    run = asyncio.run(loadgen.run_level(target, load, level))
    cpu = 100.0 * (sum(me.cpu_times()[:2]) - cpu0) / (time.monotonic() - wall0)
    figures = loadgen.summarize(run)
    prompt = figures["prompt_tokens"] / max(1, figures["completed"])
    return {
        "output_tokens_per_s": figures["output_tokens_per_s"],
        "ttft_p50_ms": figures["ttft_ms"]["p50"],
        "server_ttft_p50_ms": figures["server_ttft_ms"]["p50"],
        "itl_p50_ms": figures["itl_ms"]["p50"],
        "latency_p50_ms": figures["latency_ms"]["p50"],
        "mean_concurrency": figures["mean_concurrency"],
        "errors": figures["errors"],
        "prompt_tokens_per_request": round(prompt, 1),
        "output_tokens": figures["output_tokens"],
        "cpu_percent": round(cpu, 1),
    }


def peer(
    exe: Path, url: str, concurrency: int, requests: int, prompt: int, output: int, tokenizer: Path
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "guidellm.json"
        backend = {"kind": "openai_http", "target": url, "request_format": "/v1/completions"}
        command = [
            str(exe), "run",
            "--backend", json.dumps(backend),
            "--profile", f"kind=concurrent,streams={concurrency}",
            "--data", f"kind=synthetic_text,prompt_tokens={prompt},output_tokens={output}",
            "--constraint", f"kind=max_requests,count={requests}",
            "--tokenizer", f"kind=hf_auto,model={tokenizer}",
            "--output", f"kind=json,path={out}",
            "--disable-console",
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        began = time.monotonic()
        child = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, CLIENT_CPUS),
        )
        output_text = child.stdout.read().decode(errors="replace") if child.stdout else ""
        # guidellm's own CPU and that of the workers it waited for
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        process_wall = time.monotonic() - began
        cpu = usage.ru_utime + usage.ru_stime
        if child.returncode != 0 or not out.exists():
            raise RuntimeError(f"guidellm failed ({child.returncode}):\n{output_text[-2000:]}")
        report = json.loads(out.read_text())
    benchmark = report["benchmarks"][0]
    metrics = benchmark["metrics"]
    done = benchmark["requests"]["successful"]

    def ok(name: str, stat: str) -> float:
        return float(metrics[name]["successful"][stat])

    # the same definitions and estimator as ours, from guidellm's per-request records:
    # output tokens over the wall time from the first start to the last end; TTFT p50
    wall = max(r["request_end_time"] for r in done) - min(r["request_start_time"] for r in done)
    ttfts = [float(r["time_to_first_token_ms"]) for r in done]
    return {
        "output_tokens_per_s": round(sum(r["output_tokens"] for r in done) / wall, 2),
        "ttft_p50_ms": round(loadgen.percentile(ttfts, 50) or 0.0, 2),
        "reported_output_tokens_per_s": round(ok("output_tokens_per_second", "mean"), 2),
        "reported_ttft_median_ms": round(ok("time_to_first_token_ms", "median"), 2),
        "itl_p50_ms": round(ok("inter_token_latency_ms", "median"), 3),
        "latency_p50_ms": round(1000 * ok("request_latency", "median"), 2),
        # requests in flight on average: below the concurrency, the client left slots idle
        "mean_concurrency": round(sum(float(r["request_latency"]) for r in done) / wall, 2),
        "errors": int(metrics["request_totals"]["errored"]),
        "prompt_tokens_per_request": round(ok("prompt_token_count", "mean"), 1),
        "cpu_percent_of_process_wall": round(100.0 * cpu / process_wall, 1),  # with start-up
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default="1,2,4")
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument(
        "--output-tokens", type=int, default=160, help="prompt + output ≤ 256 (the tiny model)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--server-cpus", type=float, default=0.0, help="a CPU quota for the server (0: none)"
    )
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, CLIENT_CPUS)  # our generator off the server's core
    levels = [int(v) for v in args.levels.split(",")]
    replica: Replica | None = None
    try:
        with services("docker", log=log):
            script = llama_cpp_script()
            image = script.image(log=log)
            gguf = script.tiny_gguf(log=log)["F16"]
            tokenizer = script.tiny_model_dir()
            exe = guidellm_python()
            replica = Replica(image, gguf, args.threads, args.server_cpus)
            log(f"llama-server on {replica.url}; guidellm {GUIDELLM}; levels {levels}")
            # our prompts are words: find how many make as many tokens as guidellm's prompts
            probe = ours(replica.url, 1, 4, args.prompt_tokens, 4)
            words = max(
                1,
                round(
                    args.prompt_tokens
                    * args.prompt_tokens
                    / max(1.0, probe["prompt_tokens_per_request"])
                ),
            )
            rows: list[dict[str, Any]] = []
            for round_ in range(args.rounds):
                for c in levels:
                    pair = {}
                    order = ("ours", "peer") if round_ % 2 == 0 else ("peer", "ours")
                    for who in order:
                        if who == "ours":
                            pair[who] = ours(
                                replica.url, c, args.requests, words, args.output_tokens
                            )
                        else:
                            pair[who] = peer(
                                exe,
                                replica.url,
                                c,
                                args.requests,
                                args.prompt_tokens,
                                args.output_tokens,
                                tokenizer,
                            )
                    row = {
                        "round": round_ + 1,
                        "concurrency": c,
                        "ours": pair["ours"],
                        "guidellm": pair["peer"],
                        "tokens_per_s_ratio": round(
                            pair["ours"]["output_tokens_per_s"]
                            / pair["peer"]["output_tokens_per_s"],
                            3,
                        ),
                        "ttft_p50_ratio": round(
                            pair["ours"]["ttft_p50_ms"] / pair["peer"]["ttft_p50_ms"], 3
                        ),
                        "latency_p50_ratio": round(
                            pair["ours"]["latency_p50_ms"] / pair["peer"]["latency_p50_ms"], 3
                        ),
                    }
                    rows.append(row)
                    me, them = pair["ours"], pair["peer"]
                    log(
                        f"round {row['round']} c={c}: tok/s ours {me['output_tokens_per_s']}"
                        f" guidellm {them['output_tokens_per_s']} (×{row['tokens_per_s_ratio']})"
                        f" · TTFT p50 ours {me['ttft_p50_ms']} ms guidellm "
                        f"{them['ttft_p50_ms']} ms (×{row['ttft_p50_ratio']})"
                        f" (the server's own {me['server_ttft_p50_ms']} ms)"
                        f" · prompt tokens {me['prompt_tokens_per_request']} vs "
                        f"{them['prompt_tokens_per_request']}"
                    )
                    print(json.dumps(row), flush=True)
    except Missing as exc:
        log(f"cannot run: {exc}")
        print(json.dumps({"error": str(exc), "ok": False}), flush=True)
        return 1
    finally:
        if replica is not None:
            replica.stop()
    by_level = {
        c: {
            "tokens_per_s_vs_peer": statistics.median(
                r["tokens_per_s_ratio"] for r in rows if r["concurrency"] == c
            ),
            "ttft_p50_vs_peer": statistics.median(
                r["ttft_p50_ratio"] for r in rows if r["concurrency"] == c
            ),
        }
        for c in levels
    }
    tokens = statistics.median(r["tokens_per_s_ratio"] for r in rows)
    ttft = statistics.median(r["ttft_p50_ratio"] for r in rows)
    figures = {
        "tokens_per_s_vs_peer": tokens,
        # our TTFT p50 over the runtime's own (llama.cpp timings): what the client adds
        "ttft_p50_vs_server": statistics.median(
            r["ours"]["ttft_p50_ms"] / r["ours"]["server_ttft_p50_ms"]
            for r in rows
            if r["ours"]["server_ttft_p50_ms"]
        ),
        "ttft_p50_vs_peer": ttft,
        # per-request latency agrees; the throughput gap is the time between requests
        "latency_p50_vs_peer": statistics.median(r["latency_p50_ratio"] for r in rows),
        "mean_concurrency_ours": statistics.median(r["ours"]["mean_concurrency"] for r in rows),
        "mean_concurrency_peer": statistics.median(r["guidellm"]["mean_concurrency"] for r in rows),
        "by_concurrency": by_level,
        "generator_cpu_pct": statistics.median(r["ours"]["cpu_percent"] for r in rows),
        "peer_cpu_pct_incl_startup": statistics.median(
            r["guidellm"]["cpu_percent_of_process_wall"] for r in rows
        ),
        "errors": sum(r["ours"]["errors"] + r["guidellm"]["errors"] for r in rows),
        # every request generated exactly output_tokens (ignore_eos), counted by the runtime
        "ours_output_tokens_exact": all(
            r["ours"]["output_tokens"] == args.requests * args.output_tokens for r in rows
        ),
        "rounds": args.rounds,
        "requests_per_level": args.requests,
        "output_tokens": args.output_tokens,
        "server_cpus": args.server_cpus,
        "server_core": SERVER_CPU,
        "within_10_percent": abs(tokens - 1) <= 0.10 and abs(ttft - 1) <= 0.10,
        "ok": True,
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
