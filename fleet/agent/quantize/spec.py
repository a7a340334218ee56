"""What to produce: the job's errors and the claim answer of a quantize job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.agent.downloads.spec import DownloadSpec
from fleet.agent.errors import AdapterError

FORMAT_GGUF = "gguf"
FORMAT_ONNX = "onnx"


class QuantizeError(AdapterError):
    """A quantize job cannot go on; ``code`` names the case for the control plane and tests."""

    def __init__(self, message: str, *, retryable: bool, code: str) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Resource limits of the tool processes (None: the tool's default / no limit)."""

    threads: int | None = None
    memory_mb: int | None = None

    @classmethod
    def from_claim(cls, raw: dict[str, Any] | None) -> Limits:
        raw = raw or {}
        threads = raw.get("threads")
        memory = raw.get("memory_mb")
        return cls(
            threads=int(threads) if threads else None,
            memory_mb=int(memory) if memory else None,
        )


@dataclass(frozen=True)
class QuantizeSpec:
    """The claim answer: the source to fetch, the outputs to make, how to evaluate them."""

    job_id: int
    format: str
    levels: tuple[str, ...]
    source_format: str  # safetensors or gguf
    source_name: str
    source_quantization: str
    download: DownloadSpec  # the source variant's files, fetched like a download job
    imatrix: bool = False
    imatrix_levels: tuple[str, ...] = ()
    evaluate: bool = True
    eval_text: str = ""
    eval_text_sha256: str = ""
    eval_prompt: str = "The fleet"
    eval_tokens: int = 32
    ppl_context: int = 128
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)  # level -> registered output
    output_prefix: str = "quantized"
    limits: Limits = Limits()
    progress_interval_s: float = 0.5

    @classmethod
    def from_claim(
        cls, job_id: int, answer: dict[str, Any], server: str, credential: str | None
    ) -> QuantizeSpec:
        source = answer.get("source") or {}
        download = DownloadSpec.from_claim(job_id, source, server, credential)
        evaluation = answer.get("evaluation") or {}
        fmt = str(answer.get("format") or "")
        if fmt not in (FORMAT_GGUF, FORMAT_ONNX):
            raise QuantizeError(
                f"The control plane asked for format {fmt!r}, which this agent does not know; "
                "upgrade the agent.",
                retryable=False,
                code="unknown_format",
            )
        return cls(
            job_id=job_id,
            format=fmt,
            levels=tuple(str(level) for level in answer.get("levels") or []),
            source_format=str(source.get("format") or ""),
            source_name=str(source.get("name") or ""),
            source_quantization=str(source.get("quantization") or ""),
            download=download,
            imatrix=bool(answer.get("imatrix")),
            imatrix_levels=tuple(str(x) for x in answer.get("imatrix_levels") or []),
            evaluate=bool(evaluation.get("enabled", True)),
            eval_text=str(evaluation.get("text") or ""),
            eval_text_sha256=str(evaluation.get("text_sha256") or ""),
            eval_prompt=str(evaluation.get("prompt") or "The fleet"),
            eval_tokens=int(evaluation.get("tokens") or 32),
            ppl_context=int(evaluation.get("context") or 128),
            reuse={str(k): dict(v) for k, v in (answer.get("reuse") or {}).items()},
            output_prefix=str(answer.get("output_prefix") or "quantized"),
            limits=Limits.from_claim(answer.get("limits")),
            progress_interval_s=float(answer.get("progress_interval_s") or 0.5),
        )
