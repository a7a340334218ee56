"""Quantize jobs on the node: GGUF with llama.cpp's tools, ONNX Runtime int8/int4.

Runs inside the agent's Celery worker; no Django. Same job machinery as downloads: claim over
the API (the answer says what to make), progress by stage through the downloads'
:class:`~fleet.agent.downloads.Reporter` (which renews the lease and sees a cancel), outcome
reported at the end. The source variant is fetched from the fleet mirror into the node's hub
cache exactly as a download job would.

Modules: ``spec`` (errors, the claim answer), ``tools`` (the llama.cpp tools path, running a
tool in its own process group with limits), ``progress`` (stages), ``gguf`` (convert, imatrix,
quantize), ``evaluate`` (perplexity, tokens/s), ``onnx`` + ``onnx_tool`` (export, int8, int4,
smoke check), ``upload`` (outputs into the fleet store), ``job`` (the pipeline and
``run_job``).
"""

from fleet.agent.quantize.job import Pipeline, run_job, work_dir
from fleet.agent.quantize.progress import StageProgress
from fleet.agent.quantize.spec import FORMAT_GGUF, FORMAT_ONNX, Limits, QuantizeError, QuantizeSpec
from fleet.agent.quantize.tools import TOOLS_ENV, LlamaTools, ToolFailed, ToolRunner

__all__ = [
    "FORMAT_GGUF",
    "FORMAT_ONNX",
    "TOOLS_ENV",
    "Limits",
    "LlamaTools",
    "Pipeline",
    "QuantizeError",
    "QuantizeSpec",
    "StageProgress",
    "ToolFailed",
    "ToolRunner",
    "run_job",
    "work_dir",
]
