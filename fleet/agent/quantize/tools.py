"""The tools a quantize job runs, and how they run: own process group, limits, live output.

llama.cpp's tools come from a *tools path* configured on the node (``--llama-cpp-tools`` or
``FLEET_LLAMA_CPP_TOOLS``): a folder holding ``llama-quantize``, ``llama-perplexity``,
``llama-imatrix``, ``llama-server`` (directly or under ``bin/``), ``convert_hf_to_gguf.py``
and ``gguf-py/`` — what ``scripts/llama_cpp.py build`` writes, or the ``/app`` folder of
llama.cpp's official "full" image. Python tools (the converter, the ONNX steps) run with the
agent's own interpreter, which needs torch, transformers, sentencepiece and protobuf (and
onnx, onnxruntime, onnxscript for ONNX).

Every tool runs in a process group of its own so that a cancel (or a lost lease) stops it
and every child it started; its output is read as it comes, line by line (``\\r`` counts as a
line end, for progress bars), handed to a parser for percentages and kept for the log tail.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.agent.quantize.spec import Limits, QuantizeError

TOOLS_ENV = "FLEET_LLAMA_CPP_TOOLS"
LLAMA_TOOLS = ("llama-quantize", "llama-perplexity", "llama-imatrix", "llama-server")
KILL_GRACE_S = 3.0
POLL_S = 0.2
TAIL_LINES = 200
_LINE_END = re.compile(rb"[\r\n]+")


@dataclass(frozen=True)
class LlamaTools:
    """The llama.cpp tools of this node (paths checked when a job needs them)."""

    root: Path

    @classmethod
    def configured(cls, option: str | Path | None = None) -> LlamaTools:
        value = option or os.environ.get(TOOLS_ENV)
        if not value:
            raise QuantizeError(
                "No llama.cpp tools are configured on this node: start the agent with "
                f"--llama-cpp-tools DIR (or set {TOOLS_ENV}) pointing at a folder holding "
                "llama-quantize, llama-perplexity, llama-imatrix, llama-server and "
                "convert_hf_to_gguf.py (see docs/quantization.md), then retry the job.",
                retryable=False,
                code="no_tools",
            )
        return cls(Path(value).expanduser().resolve())

    def binary(self, name: str) -> Path:
        for candidate in (self.root / "bin" / name, self.root / name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise QuantizeError(
            f"{name} is not in the llama.cpp tools path {self.root} (looked in bin/ and the "
            "folder itself). Build or install the tools there and retry the job.",
            retryable=False,
            code="no_tools",
        )

    @property
    def converter(self) -> Path:
        path = self.root / "convert_hf_to_gguf.py"
        if not path.is_file():
            raise QuantizeError(
                f"convert_hf_to_gguf.py is not in the llama.cpp tools path {self.root}; copy "
                "it (with gguf-py/) from the llama.cpp sources of the same version and retry.",
                retryable=False,
                code="no_tools",
            )
        return path

    def converter_env(self) -> dict[str, str]:
        env = dict(os.environ)
        gguf_py = self.root / "gguf-py"
        if gguf_py.is_dir():  # the converter's own gguf package, matching its version
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (str(gguf_py), env.get("PYTHONPATH", "")) if x
            )
        return env

    def version(self) -> str:
        """llama.cpp's build (``version: 1 (abc123)``) as ``llama-quantize --version`` says."""
        try:
            out = subprocess.run(  # noqa: S603 - a configured tool, no shell
                [str(self.binary("llama-quantize")), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise QuantizeError(
                f"llama-quantize in {self.root} does not run ({exc}); check the tools path.",
                retryable=False,
                code="no_tools",
            ) from None
        text = out.stdout + out.stderr
        match = re.search(r"version:\s*(\d+)\s*\(([0-9a-f]+)\)", text)
        if match:
            return f"b{match[1]} ({match[2]})"
        version_file = self.root / "VERSION"  # written by scripts/llama_cpp.py build
        if version_file.is_file():
            first, _, rest = version_file.read_text().partition("\n")
            try:
                commit = json.loads(rest).get("ggml_commit")
            except ValueError:
                commit = None
            return f"llama-cpp-python {first.strip()}" + (f" (ggml {commit})" if commit else "")
        return "unknown"


def python() -> str:
    return sys.executable


# --- Running one tool -----------------------------------------------------------------------
class ToolFailed(Exception):
    def __init__(self, returncode: int, tail: list[str]) -> None:
        super().__init__(f"exit status {returncode}")
        self.returncode = returncode
        self.tail = tail


PR_SET_PDEATHSIG = 1


def _limit(limits: Limits) -> Callable[[], None]:
    """What the child does before exec: die with its parent, take the memory limit."""
    cap = limits.memory_mb * 1024 * 1024 if limits.memory_mb else None

    def apply() -> None:  # in the child, before exec
        # A tool runs in a session of its own (so a cancel kills all of it); if the agent
        # itself is killed, the kernel sends the tool SIGKILL instead of leaving it orphaned.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return apply


def tool_env(limits: Limits, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    if limits.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(limits.threads)
    return env


class ToolRunner:
    """Runs tools for one job; ``check`` raises to stop (cancel, lost lease)."""

    def __init__(
        self,
        limits: Limits,
        check: Callable[[], None],
        note: Callable[[str], None],
    ) -> None:
        self.limits = limits
        self.check = check
        self.note = note
        self.current: subprocess.Popen[bytes] | None = None
        self.durations: dict[str, float] = {}

    def run(
        self,
        argv: Sequence[object],
        *,
        label: str,
        on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        echo: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Run to the end; the output's last lines. Raises ToolFailed on a non-zero exit."""
        command = [str(a) for a in argv]
        self.note(f"$ {' '.join(_short(a) for a in command)}")
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603 - configured tools, no shell
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=tool_env(self.limits, env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_limit(self.limits),
        )
        self.current = proc
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_read, args=(proc, lines), daemon=True)
        reader.start()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            finished = False
            while not finished:
                try:
                    line = lines.get(timeout=POLL_S)
                except queue.Empty:
                    self.check()
                    continue
                while line is not None:
                    tail.append(line)
                    if on_line is not None:
                        on_line(line)
                    if echo is None or echo(line):
                        self.note(line)
                    try:
                        line = lines.get_nowait()
                    except queue.Empty:
                        break
                else:
                    finished = True
                self.check()
            returncode = proc.wait()
        except BaseException:
            stop(proc)
            raise
        finally:
            reader.join(timeout=5)
            self.current = None
        self.durations[label] = round(time.monotonic() - started, 3)
        if returncode != 0:
            raise ToolFailed(returncode, list(tail))
        return list(tail)


def _read(proc: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    pending = b""
    read1 = getattr(proc.stdout, "read1", proc.stdout.read)
    while True:
        chunk = read1(65536)
        if not chunk:
            break
        pending += chunk
        parts = _LINE_END.split(pending)
        pending = parts.pop()
        for part in parts:
            text = part.decode("utf-8", errors="replace").strip()
            if text:
                lines.put(text)
    if pending.strip():
        lines.put(pending.decode("utf-8", errors="replace").strip())
    lines.put(None)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the tool's process group, SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=KILL_GRACE_S)


def _short(arg: str) -> str:
    return arg if len(arg) < 160 else arg[:70] + "…" + arg[-70:]


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free
