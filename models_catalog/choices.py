from django.db import models


class SizeTier(models.TextChoices):
    # Below 0.1 B parameters: test and toy models.
    TINY = "tiny", "tiny (< 0.1 B)"
    # 0.1–1.4 B parameters.
    MICRO = "micro", "micro (0.1–1.4 B)"
    # 1.5–13.9 B parameters.
    SMALL = "small", "small (1.5–13.9 B)"
    # 14–30 B parameters.
    MEDIUM = "medium", "medium (14–30 B)"
    # Above 30 B: outside the SLM range.
    LARGE = "large", "large — outside the SLM range"


class ParameterSource(models.TextChoices):
    # Exact: the safetensors metadata counts every tensor's elements.
    SAFETENSORS = "safetensors", "safetensors metadata"
    # Exact: the GGUF header's tensor infos.
    GGUF = "gguf", "GGUF metadata"
    # Estimated from config.json (layers, hidden size, vocabulary); said so in the console.
    ESTIMATE = "estimate", "estimated from config"


class VariantFormat(models.TextChoices):
    # The original weights (safetensors) with config and tokenizer.
    SAFETENSORS = "safetensors", "safetensors"
    # One GGUF file (llama.cpp, Ollama).
    GGUF = "gguf", "GGUF"
    # An ONNX model folder (ONNX Runtime).
    ONNX = "onnx", "ONNX"
