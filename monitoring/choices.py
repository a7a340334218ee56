"""The fleet's metric schema: every series name, its scope and unit.

Runtimes expose their own names (``llamacpp:tokens_predicted_total``, ``vllm:…``); the agent
normalises them with the table its runtime adapter sends in the container's labels
(``deployments/runtimes/base.py: metrics_labels``), so everything stored here uses these
names only. docs/monitoring.md lists them with their sources per runtime.
"""

from __future__ import annotations

from django.db import models


class Scope(models.TextChoices):
    # One replica (container) of a deployment on a node.
    REPLICA = "replica", "Replica"
    # One node (host): CPU, RAM, disk and its GPUs.
    NODE = "node", "Node"


class ReplicaMetric(models.TextChoices):
    """Per-replica series: the runtime's figures (normalised) and the container's."""

    # Requests being generated now (gauge).
    REQUESTS_RUNNING = "requests_running", "Requests running"
    # Requests queued, waiting for a slot (gauge).
    REQUESTS_WAITING = "requests_waiting", "Requests waiting"
    # Prompt tokens processed per second (rate of a counter over the collection interval).
    PROMPT_TOKENS_PER_S = "prompt_tokens_per_s", "Prompt tokens/s"
    # Tokens generated per second (rate of a counter over the collection interval).
    GENERATED_TOKENS_PER_S = "generated_tokens_per_s", "Generated tokens/s"
    # Mean time to first token of the requests finished in the interval (seconds).
    TIME_TO_FIRST_TOKEN_S = "time_to_first_token_s", "Time to first token (s)"
    # Mean time per generated token in the interval (seconds).
    TIME_PER_TOKEN_S = "time_per_token_s", "Time per token (s)"
    # KV-cache use, 0 to 1.
    KV_CACHE_USAGE = "kv_cache_usage", "KV-cache use"
    # Container CPU use, percent of one core (Docker's figure; 200 = two cores busy).
    CPU_PERCENT = "cpu_percent", "CPU %"
    # Container memory in use, bytes (Docker's usage minus the page cache).
    MEMORY_BYTES = "memory_bytes", "Memory (bytes)"
    # Times the engine restarted the container.
    RESTARTS = "restarts", "Restarts"


class NodeMetric(models.TextChoices):
    """Per-node series; GPU series carry the GPU index as their ``device``."""

    # Host CPU use, percent of all cores.
    CPU_PERCENT = "cpu_percent", "CPU %"
    MEMORY_USED_BYTES = "memory_used_bytes", "RAM used (bytes)"
    MEMORY_TOTAL_BYTES = "memory_total_bytes", "RAM total (bytes)"
    # The agent's data directory's file system.
    DISK_USED_BYTES = "disk_used_bytes", "Disk used (bytes)"
    DISK_TOTAL_BYTES = "disk_total_bytes", "Disk total (bytes)"
    GPU_UTILIZATION_PERCENT = "gpu_utilization_percent", "GPU utilisation %"
    # NVML's total - free: includes driver-reserved memory (fleet/agent/gpus.py).
    GPU_MEMORY_USED_BYTES = "gpu_memory_used_bytes", "GPU memory used (bytes)"
    GPU_MEMORY_TOTAL_BYTES = "gpu_memory_total_bytes", "GPU memory total (bytes)"
    GPU_TEMPERATURE_C = "gpu_temperature_c", "GPU temperature (°C)"


REPLICA_METRICS = frozenset(ReplicaMetric.values)
NODE_METRICS = frozenset(NodeMetric.values)
GPU_METRICS = frozenset(m for m in NODE_METRICS if m.startswith("gpu_"))
