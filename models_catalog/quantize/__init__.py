"""Quantization jobs: a catalog variant in, new evaluated catalog variants out.

``levels`` (what may be asked), ``architectures`` (what llama.cpp's converter converts),
``planning`` (checking a request and picking a node, before any job exists), ``services``
(the use case: ``request_quantization``), ``kinds`` (the job kind handler: what the agent is
told, the result checked, the outputs registered with lineage and evaluation), ``comparison``
(the model page's table), ``models`` (``VariantEvaluation``). The agent's side is in
``fleet/agent/quantize/``; the story is in docs/quantization.md.
"""
