"""The quantize job on the node: fetch the source, make each output, evaluate, upload.

Work happens in ``<data_dir>/quantize/job-<id>/``; ``state.json`` there records what is done
(evaluations, uploads), and every tool writes under a temporary name renamed on success, so an
agent that was killed resumes where it stopped when the job comes back to it. The folder is
removed when the job ends for good (succeeded, cancelled, failed without retry); the control
plane registers the outputs only when the job succeeds, from files already verified in its
store — a half-made output is never registered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fleet.agent.client import ServerClient, ServerRefused
from fleet.agent.downloads.cache import HubCache
from fleet.agent.downloads.job import Downloader, _finish
from fleet.agent.downloads.progress import JobsApi, Reporter
from fleet.agent.downloads.progress import Progress as FetchProgress
from fleet.agent.downloads.spec import Cancelled, DownloadError, LeaseLost, file_digest
from fleet.agent.quantize import evaluate, gguf, onnx
from fleet.agent.quantize.progress import StageProgress
from fleet.agent.quantize.spec import FORMAT_GGUF, QuantizeError, QuantizeSpec
from fleet.agent.quantize.tools import LlamaTools, ToolRunner, free_bytes
from fleet.agent.quantize.upload import upload

log = logging.getLogger("fleet.agent")

DISK_MARGIN = 0.1  # of what the job will write, on top
EVAL_TEXT = "eval.txt"


def work_dir(data_dir: Path, job_id: int) -> Path:
    return data_dir / "quantize" / f"job-{int(job_id)}"


class Pipeline:
    def __init__(
        self,
        spec: QuantizeSpec,
        answer: dict[str, Any],
        data_dir: Path,
        client: ServerClient,
        reporter: Reporter,
        progress: StageProgress,
        tools_path: str | None,
        node_name: str,
    ) -> None:
        self.spec = spec
        self.outputs: dict[str, dict[str, Any]] = {
            str(k): dict(v) for k, v in (answer.get("outputs") or {}).items()
        }
        self.work_bytes = int(answer.get("work_bytes") or 0)
        self.data_dir = data_dir
        self.client = client
        self.reporter = reporter
        self.progress = progress
        self.tools_path = tools_path
        self.node_name = node_name
        self.work = work_dir(data_dir, spec.job_id)
        self.state_path = self.work / "state.json"
        self.state: dict[str, Any] = {"evaluations": {}, "uploaded": {}, "baseline": None}
        self.runner = ToolRunner(spec.limits, reporter.check, progress.note)
        self.tools: LlamaTools | None = None
        self.tool_version = ""

    # --- state ------------------------------------------------------------------------------
    def load_state(self) -> None:
        kept = sorted(p.name for p in self.work.iterdir() if p.name != "out")
        kept += sorted(f"out/{p.name}" for p in (self.work / "out").iterdir())
        if kept:
            self.progress.note(f"resuming from {self.work}: an earlier attempt left {kept}")
        if self.state_path.is_file():
            try:
                self.state.update(json.loads(self.state_path.read_text()))
            except ValueError:
                self.progress.note("state file unreadable; evaluations and uploads run again")

    def save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    # --- steps ------------------------------------------------------------------------------
    def plan(self) -> list[str]:
        spec = self.spec
        steps = ["fetch"]
        if spec.format == FORMAT_GGUF:
            if spec.source_format != "gguf":
                steps.append("convert")
            if spec.evaluate:
                steps.append("evaluate baseline")
            if self.imatrix_wanted():
                steps.append("imatrix")
        else:
            steps.append("export")
        for level in spec.levels:
            steps += [f"quantize {level}", f"evaluate {level}", f"upload {level}"]
        return steps

    def imatrix_wanted(self) -> bool:
        return self.spec.imatrix and any(x in self.spec.imatrix_levels for x in self.spec.levels)

    def run(self) -> dict[str, Any]:
        spec = self.spec
        started = time.monotonic()
        if spec.format == FORMAT_GGUF:
            self.tools = LlamaTools.configured(self.tools_path)
            self.tool_version = self.tools.version()
            for name in ("llama-quantize", "llama-perplexity", "llama-server"):
                self.tools.binary(name)
            if spec.source_format != "gguf":
                _ = self.tools.converter
        else:
            onnx.check_available()
            import onnxruntime  # the agent's own: what the child processes import too

            self.tool_version = onnxruntime.__version__
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "out").mkdir(exist_ok=True)
        self.load_state()
        self.check_disk()  # before fetching anything: the source, the work, the outputs
        source_dir = self.fetch()
        text = self.work / EVAL_TEXT
        text.write_text(spec.eval_text, encoding="utf-8")
        if spec.format == FORMAT_GGUF:
            results = self.run_gguf(source_dir, text)
        else:
            results = self.run_onnx(source_dir)
        return {
            "outputs": results,
            "baseline": self.state.get("baseline"),
            "tool_version": self.tool_version,
            "node": self.node_name,
            "durations": self.runner.durations,
            "duration_s": round(time.monotonic() - started, 3),
        }

    def fetch(self) -> Path:
        spec = self.spec
        self.progress.begin("fetch", "fetching source", spec.source_name)
        fetch_progress = FetchProgress(spec.download.files)
        self.progress.fetch = fetch_progress
        downloaded = Downloader(
            spec.download, self.data_dir, self.reporter, fetch_progress, self.node_name
        ).run()
        self.progress.finish_step("fetch")
        return Path(downloaded["snapshot_dir"])

    def check_disk(self) -> None:
        pending = [lvl for lvl in self.spec.levels if lvl not in self.state["uploaded"]]
        needed = sum(int(self.outputs.get(lvl, {}).get("expected_bytes") or 0) for lvl in pending)
        needed += self.work_bytes if pending else 0
        cache = HubCache(self.data_dir, self.spec.download.repo_id)
        needed += sum(
            f.size
            for f in self.spec.download.files
            if not cache.pointer(self.spec.download.commit, f.path).exists()
        )
        needed = int(needed * (1 + DISK_MARGIN))
        free = free_bytes(self.work)
        if free < needed:
            raise QuantizeError(
                f"Not enough disk space on {self.node_name} to quantize: about "
                f"{needed / 1e9:.2f} GB needed in {self.work}, {free / 1e9:.2f} GB free. Free "
                "space there (or pick another node) and retry the job.",
                retryable=False,
                code="disk_space",
            )

    # --- GGUF -------------------------------------------------------------------------------
    def run_gguf(self, source_dir: Path, text: Path) -> list[dict[str, Any]]:
        spec, tools = self.spec, self.tools
        assert tools is not None
        if spec.source_format == "gguf":
            ggufs = sorted(source_dir.glob("*.gguf")) or sorted(source_dir.rglob("*.gguf"))
            base = ggufs[0]
            base_label = spec.source_quantization or "source"
        else:
            base = self.work / "f16.gguf"
            base_label = "F16"
            if base.is_file():
                self.progress.skip("convert")
            else:
                self.progress.begin("convert", "converting to GGUF F16", base.name)
                gguf.convert(self.runner, tools, source_dir, base, self.progress.advance)
                self.progress.finish_step("convert")
        if spec.evaluate:
            if self.state.get("baseline") is None:
                self.progress.begin("evaluate baseline", f"evaluating {base_label}", base.name)
                baseline = evaluate.perplexity(
                    self.runner, tools, base, text, spec.ppl_context, self.progress.advance
                )
                self.state["baseline"] = {"name": base_label, **baseline}
                self.save_state()
            self.progress.finish_step("evaluate baseline")
        imatrix_file: Path | None = None
        if self.imatrix_wanted():
            imatrix_file = self.work / "imatrix.gguf"
            if not imatrix_file.is_file():
                self.progress.begin("imatrix", "computing the importance matrix", base.name)
                gguf.imatrix(
                    self.runner,
                    tools,
                    base,
                    text,
                    imatrix_file,
                    spec.ppl_context,
                    self.progress.advance,
                )
            self.progress.finish_step("imatrix")
        results = []
        for level in spec.levels:
            results.append(self.gguf_level(level, base, base_label, imatrix_file, text))
        return results

    def gguf_level(
        self, level: str, base: Path, base_label: str, imatrix_file: Path | None, text: Path
    ) -> dict[str, Any]:
        spec, tools = self.spec, self.tools
        assert tools is not None
        planned = self.outputs.get(level) or {}
        relative = str(planned.get("path") or f"{spec.output_prefix}/{level}.gguf")
        target = self.work / "out" / Path(relative).name
        record = self.state["uploaded"].get(level)
        if record is not None:
            self.progress.skip(f"quantize {level}", f"evaluate {level}", f"upload {level}")
            return dict(record)
        started = time.monotonic()
        step = f"quantize {level}"
        use_imatrix = imatrix_file if level in spec.imatrix_levels else None
        params: dict[str, Any]
        if target.is_file():
            params = dict(self.state.get("params", {}).get(level) or {})
            self.progress.skip(step)
        else:
            self.progress.begin(step, f"quantizing to {level}", target.name)
            if level == base_label == "F16" and spec.source_format != "gguf":
                os.link(base, target)
                params = {"type": "F16", "arguments": ["--outtype", "f16"], "step": "convert"}
            else:
                arguments = gguf.quantize(
                    self.runner,
                    tools,
                    base,
                    target,
                    level,
                    self.progress.advance,
                    imatrix_file=use_imatrix,
                    requantize=spec.source_format == "gguf"
                    and base_label not in ("F16", "BF16", "F32"),
                )
                params = {"type": level, "arguments": arguments, "imatrix": use_imatrix is not None}
            self.state.setdefault("params", {})[level] = params
            self.save_state()
            self.progress.finish_step(step)
        quantize_s = round(time.monotonic() - started, 3)
        evaluation = self.state["evaluations"].get(level)
        if evaluation is None and spec.evaluate:
            self.progress.begin(f"evaluate {level}", f"evaluating {level}", target.name)
            ppl = evaluate.perplexity(
                self.runner, tools, target, text, spec.ppl_context, self.progress.advance
            )
            self.progress.advance(0.7)
            speed = evaluate.tokens_per_second(
                self.runner, tools, target, spec.eval_prompt, spec.eval_tokens
            )
            evaluation = {
                **ppl,
                **speed,
                "text_sha256": spec.eval_text_sha256,
                "prompt": spec.eval_prompt,
            }
            self.state["evaluations"][level] = evaluation
            self.save_state()
        self.progress.finish_step(f"evaluate {level}")
        files = [self.send(level, target, relative)]
        record = {
            "level": level,
            "name": planned.get("name") or level,
            "files": files,
            "size": files[0]["size"],
            "sha256": files[0]["sha256"],
            "tool": "llama.cpp",
            "tool_version": self.tool_version,
            "params": {
                **params,
                "threads": spec.limits.threads,
                "memory_mb": spec.limits.memory_mb,
            },
            "evaluation": evaluation or {},
            "quantize_s": quantize_s,
            "duration_s": round(time.monotonic() - started, 3),
        }
        self.state["uploaded"][level] = record
        self.save_state()
        self.progress.finish_step(f"upload {level}")
        return record

    def send(self, level: str, path: Path, relative: str) -> dict[str, Any]:
        self.progress.begin(f"upload {level}", f"uploading {level}", path.name)
        self.progress.note(f"{relative}: computing sha256")
        digest = file_digest(path, "sha256")
        sent = upload(self.client, self.spec.job_id, path, digest, relative, self.progress.advance)
        size = path.stat().st_size
        self.progress.note(
            f"{relative}: {'uploaded' if sent else 'already in the fleet store'} "
            f"({size / 1e6:.1f} MB, sha256 {digest[:12]}…)"
        )
        return {"path": relative, "size": size, "sha256": digest}

    # --- ONNX -------------------------------------------------------------------------------
    def run_onnx(self, source_dir: Path) -> list[dict[str, Any]]:
        spec = self.spec
        exported = self.work / "onnx-fp32"
        if not (exported / "model.onnx").is_file():
            self.progress.begin("export", "exporting to ONNX", "model.onnx")
            self.state["export"] = onnx.export(
                self.runner, source_dir, exported, self.progress.advance
            )
            self.save_state()
        self.progress.finish_step("export")
        results = []
        for level in spec.levels:
            record = self.state["uploaded"].get(level)
            if record is not None:
                self.progress.skip(f"quantize {level}", f"evaluate {level}", f"upload {level}")
                results.append(dict(record))
                continue
            results.append(self.onnx_level(level, exported))
        return results

    def onnx_level(self, level: str, exported: Path) -> dict[str, Any]:
        spec = self.spec
        planned = self.outputs.get(level) or {}
        folder = str(planned.get("path") or f"{spec.output_prefix}/onnx-{level}").rstrip("/")
        target = self.work / "out" / f"onnx-{level}"
        started = time.monotonic()
        if not (target / "model.onnx").is_file():
            self.progress.begin(f"quantize {level}", f"quantizing to {level}", "model.onnx")
            made = onnx.quantize(self.runner, level, exported, target, self.progress.advance)
            self.state.setdefault("params", {})[level] = made
            self.save_state()
        made = dict(self.state.get("params", {}).get(level) or {})
        self.progress.finish_step(f"quantize {level}")
        quantize_s = round(time.monotonic() - started, 3)
        evaluation = self.state["evaluations"].get(level)
        if evaluation is None:
            self.progress.begin(f"evaluate {level}", f"smoke check of {level}", "model.onnx")
            evaluation = onnx.smoke(
                self.runner, target, spec.eval_prompt, spec.eval_tokens, self.progress.advance
            )
            self.state["evaluations"][level] = evaluation
            self.save_state()
        self.progress.finish_step(f"evaluate {level}")
        files = []
        members = sorted(p for p in target.rglob("*") if p.is_file())
        for index, path in enumerate(members):
            relative = f"{folder}/{path.relative_to(target).as_posix()}"
            files.append(self.send(level, path, relative))
            self.progress.advance((index + 1) / len(members))
        model_file = next(f for f in files if f["path"].endswith("/model.onnx"))
        export = self.state.get("export") or {}
        record = {
            "level": level,
            "name": planned.get("name") or f"onnx-{level}",
            "files": files,
            "size": sum(f["size"] for f in files),
            "sha256": model_file["sha256"],
            "tool": "onnxruntime",
            "tool_version": str(made.get("onnxruntime") or self.tool_version),
            "params": {
                "method": made.get("method"),
                **(made.get("params") or {}),
                "export": {"opset": export.get("opset"), "torch": export.get("torch")},
                "threads": spec.limits.threads,
                "memory_mb": spec.limits.memory_mb,
            },
            "opset": evaluation.get("opset") or export.get("opset"),
            "evaluation": evaluation,
            "quantize_s": quantize_s,
            "duration_s": round(time.monotonic() - started, 3),
        }
        self.state["uploaded"][level] = record
        self.save_state()
        self.progress.finish_step(f"upload {level}")
        return record


def _clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run_job(
    job_id: int,
    client: ServerClient,
    data_dir: Path,
    server: str,
    node_name: str = "this node",
    tools_path: str | None = None,
) -> str:
    """Claim, run and report one quantize job. Returns the outcome (or 'skipped'/'lost')."""
    api = JobsApi(client)
    try:
        answer = api.claim(job_id)
    except ServerRefused as refused:
        log.info("job %s not claimed: %s", job_id, refused.detail)
        return "skipped"
    node_name = str(answer.get("node") or node_name)
    progress = StageProgress([])
    body: dict[str, Any]
    reporter: Reporter | None = None
    work = work_dir(data_dir, job_id)
    keep_work = False
    try:
        spec = QuantizeSpec.from_claim(job_id, answer, server, client.credential)
        reporter = Reporter(api, job_id, progress, spec.progress_interval_s)  # type: ignore[arg-type]
        pipeline = Pipeline(
            spec, answer, data_dir, client, reporter, progress, tools_path, node_name
        )
        progress.steps = pipeline.plan()
        reporter.start()
        result = pipeline.run()
        body = {"outcome": "succeeded", "result": result}
    except Cancelled:
        body = {
            "outcome": "cancelled",
            "log": "stopped; the tool was killed, temporary files removed",
        }
    except LeaseLost:
        log.warning("job %s: lease lost; stopping without reporting", job_id)
        if reporter is not None:
            reporter.stop()
        return "lost"
    except (QuantizeError, DownloadError) as exc:
        keep_work = exc.retryable
        body = {
            "outcome": "failed",
            "error": exc.message,
            "retryable": exc.retryable,
            "code": exc.code,
        }
    except Exception as exc:  # a bug or an unexpected OS error: report it, retry may help
        log.exception("job %s failed", job_id)
        keep_work = True
        body = {
            "outcome": "failed",
            "error": f"Unexpected error on the node: {type(exc).__name__}: {exc}",
            "retryable": True,
            "code": "unexpected",
        }
    if reporter is not None:
        reporter.stop()
    body["progress"] = progress.snapshot()
    extra = progress.take_log()
    if extra:
        body["log"] = (extra + "\n" + body.get("log", "")).strip()
    _finish(api, job_id, body)
    if not keep_work:
        _clean(work)
    return str(body["outcome"])
