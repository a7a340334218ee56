"""pytest fixtures: a real llama.cpp runtime, built locally (no registry is reachable).

Session-scoped, cached across sessions under ``~/.cache/slm-fleet`` by scripts/llama_cpp.py
(see docs/llama-cpp-local.md). The first build takes about 5 minutes on 2 cores; a failed
build FAILS the fixture with the tail of its log, it never skips. A test that may trigger the
first build needs ``@pytest.mark.timeout(900)`` (the suite's default is 300 s).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_cpp.py"
MODULE_NAME = "slm_fleet_llama_cpp_script"  # not `llama_cpp`: that is llama-cpp-python's name


def _script() -> ModuleType:
    module = sys.modules.get(MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(MODULE_NAME, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE_NAME] = module
        spec.loader.exec_module(module)
    return module


llama_cpp = _script()


def _log(message: str) -> None:
    print(f"[llama_cpp] {message}", flush=True)


@pytest.fixture(scope="session")
def llama_cpp_tools() -> Path:
    """The cache directory of the built llama.cpp: ``bin/llama-server``, ``bin/llama-quantize``,
    ``convert_hf_to_gguf.py`` + ``gguf-py/``, ``VERSION``."""
    try:
        return llama_cpp.build(log=_log)
    except llama_cpp.BuildError as exc:
        pytest.fail(f"building llama.cpp {llama_cpp.VERSION} failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def llama_server_image(llama_cpp_tools: Path) -> str:
    """Tag of the local image ``slm-fleet/llama-server:<version>`` (entrypoint
    ``/app/llama-server``, as ``ghcr.io/ggml-org/llama.cpp:server``)."""
    try:
        return llama_cpp.image(log=_log)
    except llama_cpp.BuildError as exc:
        pytest.fail(f"building the llama-server image failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_gguf(llama_cpp_tools: Path, tiny_model_dir: Path) -> Path:
    """The project's tiny Llama test model as GGUF F16 (Q8_0 next to it)."""
    try:
        return llama_cpp.tiny_gguf(tiny_model_dir, log=_log)["F16"]
    except llama_cpp.BuildError as exc:
        pytest.fail(f"converting the tiny model to GGUF failed: {exc}", pytrace=False)
