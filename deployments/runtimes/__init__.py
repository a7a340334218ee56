"""Runtime adapters: one per inference runtime, the only code that knows its flags.

``ADAPTERS`` maps a :class:`~deployments.choices.Runtime` value to its adapter;
:func:`get_adapter` looks one up (an unknown name is an :class:`UnknownRuntimeError`, which
is an :class:`~deployments.runtimes.base.ArgumentError` so API callers answer 400), and
:func:`adapter_for_variant_format` lists the runtimes that can serve a variant format,
preferred first. See docs/runtimes.md.
"""

from __future__ import annotations

from deployments.runtimes.base import ArgumentError, RuntimeAdapter
from deployments.runtimes.custom import CustomImageAdapter
from deployments.runtimes.llamacpp import LlamaCppAdapter
from deployments.runtimes.ollama import OllamaAdapter
from deployments.runtimes.vllm import VllmAdapter

ADAPTERS: dict[str, RuntimeAdapter] = {
    adapter.name: adapter
    for adapter in (LlamaCppAdapter(), VllmAdapter(), OllamaAdapter(), CustomImageAdapter())
}


class UnknownRuntimeError(ArgumentError, LookupError):
    """No adapter has this name."""

    def __init__(self, name: object) -> None:
        super().__init__(
            {"runtime": f"unknown runtime {name!r}; known: {', '.join(sorted(ADAPTERS))}"}
        )
        self.name = name


def get_adapter(name: str) -> RuntimeAdapter:
    try:
        return ADAPTERS[name]
    except (KeyError, TypeError):
        raise UnknownRuntimeError(name) from None


def adapter_for_variant_format(fmt: str) -> list[str]:
    """Runtime names that can serve variants of format ``fmt``, preferred first
    (the custom image, which can serve anything, comes last)."""
    return [name for name, adapter in ADAPTERS.items() if fmt in adapter.formats]


__all__ = [
    "ADAPTERS",
    "UnknownRuntimeError",
    "adapter_for_variant_format",
    "get_adapter",
]
