#!/usr/bin/env python
"""Model download benchmark: the fleet mirror behind nginx against nginx serving files itself.

    .venv/bin/python bench/download.py [--model-mib 1024] [--runs 5] [--resume auto] ...

What it does (everything on 127.0.0.1; everything it starts is stopped by PID, its database
dropped, its Redis database flushed, its temporary directory removed):

1. installs Debian's nginx when it is missing (apt-get, as scripts/test does for its
   packages), creates the PostgreSQL database ``fleet_bench_dl_<pid>`` and migrates it;
2. writes a model of ``--model-mib`` MiB (``--shards`` random ``.safetensors`` shards plus
   config and tokenizer JSON) straight into a fresh model store with ``store.ingest_file``,
   with its CatalogModel, ModelFile and Variant rows;
3. deploys the mirror as docs/production.md says: uvicorn serving ``config.asgi`` with
   ``FLEET_ENV=production`` and ``FLEET_MIRROR_ACCEL_REDIRECT=/_store/``, behind nginx running
   ``docker/nginx/fleet.conf`` itself (TLS lines dropped, addresses and store path substituted,
   nothing else changed). In the same nginx, a second, plain static server serves the same
   blobs (hard links) under the same ``/hub/{repo}/resolve/{commit}/{path}`` URLs, with the
   mirror's own JSON answers (tree, revision) saved as static files and the mirror's HEAD
   headers (ETag, X-Repo-Commit, ...) replayed, so the client makes identical requests;
4. throughput: ``huggingface_hub.snapshot_download`` (``max_workers=8``) in a fresh process
   and a fresh cache directory per run (on /dev/shm when it has room, so that disk
   write-back does not blur the figures), ``--runs`` runs against each server in alternating
   order; the first run of each verifies every file's sha256. Figures are medians; the
   median of the per-run pairs (the two downloads of a run ran back to back) is printed too;
5. resume: starts a download, SIGKILLs the downloader's process group once ~``--kill-at`` of
   the model is on disk, starts it again, and sums the body bytes nginx's access log records
   for the mirror's ``/hub/`` requests over both attempts. With the download jobs present
   (``models_catalog.downloads``) the downloader is a real agent (``manage.py fleet_agent``,
   joined through nginx) running a job from ``put_variant_on_nodes``, with a Celery worker
   and beat for the job reconciler; otherwise (or ``--resume client``) a
   ``snapshot_download`` process, which huggingface_hub 2.x restarts from zero per file
   (expect ~1.5x).

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    PY,
    ControlPlaneBench,
    Proc,
    admin_token,
    answers,
    exit_on_sigterm,
    free_port,
    http,
    log,
    production_env,
    run_bench,
    wait_for,
)
from _download_support import (  # noqa: E402
    ACCEL_PREFIX,
    MB,
    REDIS_URL,
    REPO_ID,
    TARGETS,
    nginx_binary,
    nginx_main_conf,
    nginx_version,
    production_snippet,
    read_access_log,
    static_server,
)

CLIENT = BENCH_DIR / "_download_client.py"


def blob_bytes(store: Path, sha256: str, start: int, length: int) -> bytes:
    with (store / "blobs" / "sha256" / sha256[:2] / sha256).open("rb") as handle:
        handle.seek(start)
        return handle.read(length)


# --- The model ------------------------------------------------------------------------------
def safetensors_header(size: int, name: str) -> bytes:
    """A valid safetensors header for one U8 tensor filling the rest of a ``size``-byte file."""
    header = b""
    for _ in range(5):
        payload = size - 8 - len(header)
        text = json.dumps(
            {name: {"dtype": "U8", "shape": [payload], "data_offsets": [0, payload]}},
            separators=(",", ":"),
        )
        text += " " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned
        if len(text) == len(header):
            break
        header = text.encode()
    if 8 + len(header) + payload != size:
        raise RuntimeError("could not fit a safetensors header")
    return len(header).to_bytes(8, "little") + header


def write_file(path: Path, size: int, head: bytes = b"", *, chunk: int = 8 << 20) -> dict[str, Any]:
    """Write ``head`` then random bytes up to ``size``; return sha256 and git blob sha1."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("wb") as handle:
        if head:
            handle.write(head)
            sha256.update(head)
            sha1.update(head)
        left = size - len(head)
        while left > 0:
            block = os.urandom(min(chunk, left))
            handle.write(block)
            sha256.update(block)
            sha1.update(block)
            left -= len(block)
    return {"size": size, "sha256": sha256.hexdigest(), "blob_id": sha1.hexdigest()}


def small_files(shard_names: list[str], shard_sizes: list[int]) -> dict[str, bytes]:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "vocab_size": 32000,
        "torch_dtype": "bfloat16",
    }
    vocab = {f"tok{i}": i for i in range(2000)}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    index = {
        "metadata": {"total_size": sum(shard_sizes)},
        "weight_map": {f"weight_{i}": name for i, name in enumerate(shard_names)},
    }
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2}).encode(),
        "tokenizer.json": json.dumps(tokenizer).encode(),
        "tokenizer_config.json": json.dumps({"model_max_length": 2048}).encode(),
        "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
    }


# --- The benchmark --------------------------------------------------------------------------
class Bench(ControlPlaneBench):
    redis_url = REDIS_URL

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-dl-", dir=args.tmp_dir))
        # nginx's workers (an unprivileged user when the bench runs as root) read the store
        # and the static tree through this directory
        self.tmp.chmod(0o755)
        self.store = self.tmp / "store"
        self.static_root = self.tmp / "static"
        self.ngx = self.tmp / "nginx"
        self.db = f"fleet_bench_dl_{os.getpid()}"
        self.db_created = False
        self.redis_used = False
        self.django_ready = False
        self.procs: list[Proc] = []
        self.env = self._env()
        self.token = ""
        self.token_file = self.tmp / "token"
        self.commit = secrets.token_hex(20)
        self.files: list[dict[str, Any]] = []
        self.model_bytes = 0
        self.variant_id: int | None = None
        self.ports: dict[str, int] = {}
        self.nginx: Proc | None = None
        self.expect_file = self.tmp / "expect.json"
        self.notes: list[str] = []
        self.heads: dict[str, list[float]] = {"mirror": [], "static": []}
        self.caches = self._cache_base()

    def _cache_base(self) -> Path:
        """Where the clients write: tmpfs when it has room, so that the disk's write-back
        does not blur the figures (both servers' clients write to the same place)."""
        base = Path(self.args.cache_dir) if self.args.cache_dir else None
        if base is None:
            shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp() folder goes in it
            room = 2.5 * self.args.model_mib * 1024 * 1024
            if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > room:
                base = shm
        if base is None:
            return self.tmp / "caches"
        return Path(tempfile.mkdtemp(prefix="fleet-bench-dl-caches-", dir=base))

    def _env(self) -> dict[str, str]:
        env, added = production_env(
            self.tmp,
            self.db,
            REDIS_URL,
            drop_hf=True,
            FLEET_MODEL_STORE=str(self.store),
            FLEET_MIRROR_ACCEL_REDIRECT="" if self.args.no_accel else ACCEL_PREFIX,
            # the agent resume: a killed agent's job goes back to the queue within seconds
            FLEET_JOB_LEASE_SECONDS="10",
            FLEET_JOB_RECONCILE_SECONDS="2",
        )
        self.added_env = set(added)
        # clients: no token from the environment, no telemetry, no progress bars in the logs
        env.update(
            HF_HOME=str(self.tmp / "hf-home"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        return env

    # --- setup ---
    def seed(self) -> None:
        from core.choices import TokenScope
        from models_catalog import store
        from models_catalog.choices import VariantFormat
        from models_catalog.models import CatalogModel, ModelFile, Variant

        user, self.token = admin_token(TokenScope.READ)
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)

        args = self.args
        total = args.model_mib * 1024 * 1024
        shards = [
            f"model-{i:05d}-of-{args.shards:05d}.safetensors" for i in range(1, args.shards + 1)
        ]
        sizes = [total // args.shards] * args.shards
        sizes[-1] += total - sum(sizes)
        incoming = store.incoming_dir()
        started = time.monotonic()
        made: list[dict[str, Any]] = []
        for index, (name, size) in enumerate(zip(shards, sizes, strict=True)):
            path = incoming / f"{name}.bench"
            info = write_file(path, size, safetensors_header(size, f"weight_{index}"))
            store.ingest_file(path, expected_sha256=info["sha256"], expected_size=size)
            made.append({"path": name, "lfs": True, **info})
        for name, content in small_files(shards, sizes).items():
            path = incoming / f"{name}.bench"
            path.write_bytes(content)
            info = {
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "blob_id": hashlib.sha1(
                    f"blob {len(content)}\0".encode() + content, usedforsecurity=False
                ).hexdigest(),
            }
            store.ingest_file(path, expected_sha256=info["sha256"], expected_size=len(content))
            made.append({"path": name, "lfs": False, **info})
        self.files = sorted(made, key=lambda f: f["path"])
        self.model_bytes = sum(f["size"] for f in self.files)
        log(
            f"wrote {len(self.files)} files, {self.model_bytes / MB:.0f} MB, into the store "
            f"in {time.monotonic() - started:.1f} s"
        )
        self.expect_file.write_text(json.dumps({f["path"]: f["sha256"] for f in self.files}))

        config = json.loads(small_files(shards, sizes)["config.json"])
        model = CatalogModel.objects.create(
            repo_id=REPO_ID,
            requested_revision="main",
            commit_sha=self.commit,
            upstream_commit_sha=self.commit,
            architecture="LlamaForCausalLM",
            model_type="llama",
            config=config,
            num_layers=config["num_hidden_layers"],
            hidden_size=config["hidden_size"],
            num_attention_heads=config["num_attention_heads"],
            num_kv_heads=config["num_key_value_heads"],
            max_context=config["max_position_embeddings"],
            vocab_size=config["vocab_size"],
            parameter_count=self.model_bytes // 2,
            licence="apache-2.0",
            task="text-generation",
            library="transformers",
            total_size=self.model_bytes,
            imported_by=user,
        )
        rows = ModelFile.objects.bulk_create(
            ModelFile(
                model=model,
                path=f["path"],
                size=f["size"],
                sha256=f["sha256"],
                blob_id=f["blob_id"],
                lfs=f["lfs"],
            )
            for f in self.files
        )
        variant = Variant.objects.create(
            model=model,
            name="original",
            format=VariantFormat.SAFETENSORS,
            size=self.model_bytes,
            produced_by={"source": "upstream"},
        )
        variant.files.set(rows)
        self.variant_id = variant.pk

    def start_web(self) -> None:
        port = free_port()
        # the web command of docs/production.md, bound to loopback
        argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--proxy-headers", "--forwarded-allow-ips=*"]
        argv += ["--workers", str(self.args.web_workers)]
        web = Proc("uvicorn", argv, self.env, self.tmp / "uvicorn.log")
        self.procs.append(web)
        self.ports["web"] = port

        def ready() -> bool:
            if not web.alive():
                raise RuntimeError(f"uvicorn exited:\n{web.tail()}")
            return answers(f"http://127.0.0.1:{port}/healthz")()

        wait_for(ready, 60, "uvicorn")
        log(f"uvicorn ({self.args.web_workers} workers) on 127.0.0.1:{port}")

    def mirror_url(self, port_name: str = "mirror") -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}/hub"

    def mirror_metadata(self) -> None:
        """The mirror's own answers, saved for the static server; its HEAD headers per file."""
        from models_catalog.store import blob_path

        base = self.mirror_url()
        api = f"/api/models/{REPO_ID}"
        for kind, url in (
            ("revision", f"{api}/revision/{self.commit}"),
            ("tree", f"{api}/tree/{self.commit}?recursive=true&expand=false"),
        ):
            status, headers, body = http("GET", base + url, self.token)
            if status != 200:
                raise RuntimeError(f"mirror {kind}: HTTP {status} {body[:300]!r}")
            if "link" in {k.lower() for k in headers}:
                raise RuntimeError("the mirror paginates the tree; the static copy would not")
            target = self.static_root / ("hub" + url.split("?")[0])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        listed = {e["path"] for e in json.loads(body) if e.get("type") == "file"}
        if listed != {f["path"] for f in self.files}:
            raise RuntimeError(f"the mirror's tree lists {sorted(listed)}")
        keep = {n.lower(): n for n in ("ETag", "X-Repo-Commit", "X-Linked-Etag", "X-Linked-Size")}
        resolve = f"/hub/{REPO_ID}/resolve/{self.commit}/"
        for entry in self.files:
            status, headers, _ = http(
                "HEAD", base + resolve.removeprefix("/hub") + entry["path"], self.token
            )
            if status != 200:
                raise RuntimeError(f"mirror HEAD {entry['path']}: HTTP {status}")
            entry["headers"] = {
                keep[name.lower()]: value.replace('"', '\\"')
                for name, value in headers.items()
                if name.lower() in keep
            }
            if "X-Repo-Commit" not in entry["headers"]:
                raise RuntimeError(f"mirror HEAD {entry['path']} has no X-Repo-Commit")
            target = self.static_root / resolve.lstrip("/") / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob_path(entry["sha256"]), target)
            except OSError:
                target.symlink_to(blob_path(entry["sha256"]))

    def start_nginx(self) -> None:
        binary = nginx_binary()
        self.ngx.mkdir()
        self.ports["mirror"] = free_port()
        self.ports["redirect"] = free_port()
        self.ports["static"] = free_port()
        snippet = self.ngx / "fleet.conf"
        snippet.write_text(
            production_snippet(
                upstream_port=self.ports["web"],
                mirror_port=self.ports["mirror"],
                redirect_port=self.ports["redirect"],
                store=self.store,
            )
        )
        # filled in once the mirror's answers are known (reload)
        static = self.ngx / "static.conf"
        static.write_text(
            static_server(
                port=self.ports["static"], root=self.static_root, resolve_prefix="/", files=[]
            )
        )
        conf = self.ngx / "nginx.conf"
        conf.write_text(nginx_main_conf(prefix=self.ngx, snippet=snippet, static=static))
        argv = [binary, "-p", f"{self.ngx}/", "-c", str(conf), "-e", str(self.ngx / "error.log")]
        test = subprocess.run([*argv, "-t"], capture_output=True, text=True)  # noqa: S603
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
        self.nginx = Proc("nginx", argv, self.env, self.ngx / "stdout.log")
        self.procs.append(self.nginx)
        self.nginx_argv = argv
        wait_for(answers(f"http://127.0.0.1:{self.ports['mirror']}/healthz"), 30, "nginx")
        self.nginx_version = nginx_version(binary)
        log(
            f"nginx {self.nginx_version}: mirror (docker/nginx/fleet.conf) on "
            f"127.0.0.1:{self.ports['mirror']}, static on 127.0.0.1:{self.ports['static']}"
        )

    def finish_static(self) -> None:
        static = self.ngx / "static.conf"
        static.write_text(
            static_server(
                port=self.ports["static"],
                root=self.static_root,
                resolve_prefix=f"/hub/{REPO_ID}/resolve/{self.commit}/",
                files=self.files,
            )
        )
        test = subprocess.run([*self.nginx_argv, "-t"], capture_output=True, text=True)  # noqa: S603
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
        assert self.nginx is not None
        os.kill(self.nginx.pid, signal.SIGHUP)

        def reloaded() -> bool:
            url = f"http://127.0.0.1:{self.ports['static']}/hub/{REPO_ID}/resolve/{self.commit}/"
            status, headers, _ = http("HEAD", url + self.files[0]["path"])
            return status == 200 and "x-repo-commit" in {n.lower() for n in headers}

        wait_for(reloaded, 15, "nginx to reload the static server", step=0.1)
        self.check_accel()

    def check_accel(self) -> None:
        """The mirror must hand file bodies to nginx (X-Accel-Redirect), and honour Range."""
        big = max(self.files, key=lambda f: f["size"])
        url = f"{self.mirror_url()}/{REPO_ID}/resolve/{self.commit}/{big['path']}"
        log_path = self.ngx / "access.log"
        offset = log_path.stat().st_size
        request = urllib.request.Request(url)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Range", "bytes=1048576-2097151")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            body, status = response.read(), response.status
        expected = blob_bytes(self.store, big["sha256"], 1 << 20, 1 << 20)
        if status != 206 or body != expected:
            raise RuntimeError(f"mirror Range GET: HTTP {status}, {len(body)} bytes, wrong content")
        time.sleep(0.2)
        entries = read_access_log(log_path, offset, self.ports["mirror"])
        if not any(e["served_uri"].startswith(ACCEL_PREFIX) for e in entries):
            self.notes.append("the mirror streamed the file from Python (no X-Accel-Redirect)")
            log("warning: the mirror did not answer with X-Accel-Redirect")

    # --- measurements ---
    def client(
        self, endpoint: str, cache: Path, *, verify: bool = False, logname: str = "client"
    ) -> Proc:
        argv = [PY, str(CLIENT), endpoint, REPO_ID, self.commit, str(cache)]
        argv += ["--token-file", str(self.token_file), "--max-workers", str(self.args.max_workers)]
        if verify:
            argv += ["--expect", str(self.expect_file)]
        return Proc(logname, argv, self.env, self.tmp / f"{logname}.log")

    def client_result(self, proc: Proc, timeout: float = 600) -> dict[str, Any]:
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.stop(grace=1)
            raise RuntimeError(f"{proc.name} did not finish in {timeout:.0f} s") from None
        proc.handle.close()
        lines = proc.logfile.read_text(errors="replace").strip().splitlines()
        if proc.popen.returncode != 0 or not lines:
            raise RuntimeError(f"{proc.name} failed (exit {proc.popen.returncode}):\n{proc.tail()}")
        result: dict[str, Any] = json.loads(lines[-1])
        if result.get("verified") is False:
            raise RuntimeError(f"{proc.name}: downloaded files differ: {result.get('mismatch')}")
        return result

    def one_run(self, side: str, run: int, verify: bool) -> float:
        endpoint = self.mirror_url(side)
        cache = self.caches / f"{side}-{run}"
        cache.mkdir(parents=True)
        offset = (self.ngx / "access.log").stat().st_size
        proc = self.client(endpoint, cache, verify=verify, logname=f"client-{side}-{run}")
        result = self.client_result(proc)
        if result["bytes"] != self.model_bytes:
            raise RuntimeError(f"{side} run {run}: {result['bytes']} bytes, not {self.model_bytes}")
        time.sleep(0.1)
        entries = read_access_log(self.ngx / "access.log", offset, self.ports[side])
        sent = sum(e["bytes"] for e in entries)
        if sent != self.model_bytes + sum(e["bytes"] for e in entries if "/api/" in e["uri"]):
            raise RuntimeError(f"{side} run {run}: nginx sent {sent} bytes for the run")
        self.heads[side] += [e["seconds"] for e in entries if e["method"] == "HEAD"]
        shutil.rmtree(cache)
        mb_s = self.model_bytes / MB / result["seconds"]
        log(
            f"  {side:6s} run {run}: {result['seconds']:.2f} s, {mb_s:7.1f} MB/s, "
            f"{len(entries)} requests, {sent / MB:.1f} MB sent" + (" (verified)" if verify else "")
        )
        return float(result["seconds"])

    def throughput(self) -> dict[str, Any]:
        times: dict[str, list[float]] = {"mirror": [], "static": []}
        for run in range(self.args.runs):
            order = ("mirror", "static") if run % 2 == 0 else ("static", "mirror")
            for side in order:
                times[side].append(self.one_run(side, run, verify=run < 2 and side == order[0]))
        medians = {side: statistics.median(values) for side, values in times.items()}
        # each run's two downloads ran back to back: their ratio is less exposed to whatever
        # else the machine was doing than the two medians are
        paired = [s / m for m, s in zip(times["mirror"], times["static"], strict=True)]
        return {
            "mirror_s": [round(v, 3) for v in times["mirror"]],
            "nginx_s": [round(v, 3) for v in times["static"]],
            "mirror_mb_s": round(self.model_bytes / MB / medians["mirror"], 1),
            "nginx_mb_s": round(self.model_bytes / MB / medians["static"], 1),
            "paired": round(statistics.median(paired), 3),
            # nginx's $request_time of the HEAD requests (metadata; the app's share on the mirror)
            "mirror_head_ms": round(1000 * statistics.median(self.heads["mirror"]), 1),
            "nginx_head_ms": round(1000 * statistics.median(self.heads["static"]), 1),
        }

    def on_disk(self, folder: Path) -> tuple[int, int]:
        """Bytes under ``folder``'s hub-cache blobs, and how many are .incomplete files."""
        total = incomplete = 0
        for path in folder.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
                    incomplete += path.name.endswith(".incomplete")
        return total, incomplete

    def resume_client(self) -> dict[str, Any]:
        """snapshot_download killed at ~kill_at, then run again in the same cache directory."""
        cache = self.caches / "resume"
        cache.mkdir(parents=True)
        offset = (self.ngx / "access.log").stat().st_size
        first = self.client(self.mirror_url(), cache, logname="client-resume-1")
        self.procs.append(first)
        target = self.args.kill_at * self.model_bytes
        fraction = 0.0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if not first.alive():
                raise RuntimeError(f"the download ended before the kill:\n{first.tail()}")
            done, _ = self.on_disk(cache)
            if done >= target:
                first.kill_group()
                fraction = done / self.model_bytes
                break
            time.sleep(0.005)
        first.stop(grace=0)
        self.procs.remove(first)
        left, incomplete = self.on_disk(cache)
        log(
            f"  killed the downloader at {100 * fraction:.1f}% on disk "
            f"({incomplete} .incomplete files, {left / MB:.0f} MB)"
        )
        time.sleep(0.3)
        second = self.client(self.mirror_url(), cache, verify=True, logname="client-resume-2")
        result = self.client_result(second)
        time.sleep(0.3)
        entries = read_access_log(self.ngx / "access.log", offset, self.ports["mirror"])
        sent = sum(e["bytes"] for e in entries)
        _, leftover = self.on_disk(cache)
        ranges = sum(1 for e in entries if e["range"] not in ("", "-"))
        orphans = sum(p.stat().st_size for p in cache.rglob("*.incomplete") if p.is_file())
        shutil.rmtree(cache)
        return {
            "path": "client",
            "downloader": "huggingface_hub.snapshot_download in a subprocess, SIGKILLed, rerun",
            "killed_at_fraction": round(fraction, 3),
            "bytes_sent": sent,
            "ratio": round(sent / self.model_bytes, 4),
            "range_requests": ranges,
            "leftover_incomplete_files": leftover,
            "leftover_incomplete_bytes": orphans,
            "restart_seconds": round(result["seconds"], 2),
        }

    def resume(self) -> dict[str, Any] | None:
        mode = self.args.resume
        if mode == "none":
            return None
        jobs = importlib.util.find_spec("models_catalog.downloads") is not None
        if mode == "agent" or (mode == "auto" and jobs):
            from _download_agent import resume_agent

            return resume_agent(self)
        return self.resume_client()

    # --- the whole run ---
    def run(self) -> dict[str, Any]:
        if importlib.util.find_spec("models_catalog.mirror") is None:
            raise RuntimeError("models_catalog.mirror is not there: nothing to measure")
        self.create_database()
        self.setup_django()
        self.seed()
        self.start_web()
        self.start_nginx()
        self.mirror_metadata()
        self.finish_static()
        log(f"throughput: {self.args.runs} runs each, alternating, fresh cache per run")
        figures = self.throughput()
        log(f"resume: kill at ~{100 * self.args.kill_at:.0f}% ({self.args.resume})")
        resume = self.resume()
        return report(self, figures, resume)

    def cleanup(self) -> None:
        self.release()
        if not self.caches.is_relative_to(self.tmp):
            shutil.rmtree(self.caches, ignore_errors=True)
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def report(bench: Bench, figures: dict[str, Any], resume: dict[str, Any] | None) -> dict[str, Any]:
    args = bench.args
    ratio = round(figures["mirror_mb_s"] / figures["nginx_mb_s"], 3)
    lines = [
        f"model: {len(bench.files)} files, {bench.model_bytes / MB:.0f} MB "
        f"({args.shards} safetensors shards); client: huggingface_hub snapshot_download, "
        f"max_workers={args.max_workers}, fresh process and cache per run",
        f"mirror: uvicorn --workers {args.web_workers} (FLEET_ENV=production, "
        f"FLEET_MIRROR_ACCEL_REDIRECT={bench.env['FLEET_MIRROR_ACCEL_REDIRECT']!r}) behind "
        f"nginx {bench.nginx_version} with docker/nginx/fleet.conf",
        f"  seconds per run: {figures['mirror_s']}; median {figures['mirror_mb_s']} MB/s",
        f"nginx static, same files and URLs: seconds per run: {figures['nginx_s']}; "
        f"median {figures['nginx_mb_s']} MB/s",
        f"mirror / nginx: {ratio} (target >= {TARGETS['mirror_vs_nginx']}); median of the "
        f"per-run pairs: {figures['paired']}",
        f"HEAD (file metadata) median: mirror {figures['mirror_head_ms']} ms, nginx "
        f"{figures['nginx_head_ms']} ms; client caches in {bench.caches.parent}",
    ]
    if resume:
        lines += [
            f"resume ({resume['path']}: {resume['downloader']}):",
            f"  killed at {100 * resume['killed_at_fraction']:.1f}% on disk; nginx sent "
            f"{resume['bytes_sent'] / MB:.1f} MB for a {bench.model_bytes / MB:.1f} MB model = "
            f"{resume['ratio']}x (target <= {TARGETS['resume_bytes_ratio']}); "
            f"{resume['range_requests']} Range requests",
        ]
        if resume["path"] == "agent":
            lines.append(
                f"  job attempts {resume['job_attempts']}; kill to job done "
                f"{resume['kill_to_done_s']} s (a killed agent's job waits for its lease, "
                "FLEET_JOB_LEASE_SECONDS=10 here, then the reconciler queues it again)"
            )
        if resume.get("leftover_incomplete_files"):
            lines.append(
                f"  left behind: {resume['leftover_incomplete_files']} .incomplete files, "
                f"{resume['leftover_incomplete_bytes'] / MB:.0f} MB"
            )
    lines += [f"note: {n}" for n in bench.notes]
    for line in lines:
        print(line)
    result: dict[str, Any] = {
        "mirror_mb_s": figures["mirror_mb_s"],
        "nginx_mb_s": figures["nginx_mb_s"],
        "mirror_vs_nginx": ratio,
        "mirror_vs_nginx_paired": figures["paired"],
        "resume_bytes_ratio": resume["ratio"] if resume else None,
        "resume_path": resume["path"] if resume else None,
        "resume_killed_at": resume["killed_at_fraction"] if resume else None,
        "resume_bytes_sent": resume["bytes_sent"] if resume else None,
        "resume_range_requests": resume["range_requests"] if resume else None,
        "resume_kill_to_done_s": resume.get("kill_to_done_s") if resume else None,
        "mirror_head_ms": figures["mirror_head_ms"],
        "nginx_head_ms": figures["nginx_head_ms"],
        "model_bytes": bench.model_bytes,
        "runs": args.runs,
        "mirror_s": figures["mirror_s"],
        "nginx_s": figures["nginx_s"],
        "nginx_version": bench.nginx_version,
        "web_workers": args.web_workers,
        "accel_redirect": bench.env["FLEET_MIRROR_ACCEL_REDIRECT"],
        "notes": bench.notes,
    }
    result["targets_met"] = {
        "mirror_vs_nginx": ratio >= TARGETS["mirror_vs_nginx"],
        "resume_bytes_ratio": None
        if not resume
        else resume["ratio"] <= TARGETS["resume_bytes_ratio"],
    }
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-mib", type=int, default=1024, help="model size in MiB")
    parser.add_argument(
        "--shards",
        type=int,
        default=3,
        help="safetensors files (3: the agent fetches files one by one, so ~50%% of the model "
        "falls inside a file, not on the boundary between two)",
    )
    parser.add_argument("--runs", type=int, default=5, help="downloads per server (>= 3)")
    parser.add_argument("--max-workers", type=int, default=8, help="snapshot_download threads")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn --workers")
    parser.add_argument(
        "--resume",
        choices=("auto", "agent", "client", "none"),
        default="auto",
        help="auto: a real agent when the download jobs exist, else snapshot_download",
    )
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction on disk at the kill")
    parser.add_argument(
        "--no-accel",
        action="store_true",
        help="for comparison: the mirror streams files from Python (no X-Accel-Redirect)",
    )
    parser.add_argument("--tmp-dir", default=None, help="where the temporary directory goes")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the clients' hub caches go (default: /dev/shm when it has room)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (the figures are medians)")
    if not 0.05 <= args.kill_at <= 0.95:
        parser.error("--kill-at must be between 0.05 and 0.95")
    if args.model_mib < 16 or args.shards < 1:
        parser.error("--model-mib must be at least 16 and --shards at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    started = time.monotonic()
    return run_bench(Bench(args), started)


if __name__ == "__main__":
    sys.exit(main())
