"""The fleet model mirror: the control plane's store behind a read-only Hugging Face Hub API.

Nodes (and people with an API token) point the unmodified ``huggingface_hub`` client, or
transformers, at ``http://<server>/hub`` (``endpoint=`` or ``HF_ENDPOINT``) and download the
catalog's pinned models from the fleet's content-addressed store instead of the internet.
"""
