from django.db import models


class Runtime(models.TextChoices):
    # llama.cpp's llama-server (GGUF variants, CPU or GPU layers).
    LLAMACPP = "llamacpp", "llama.cpp server"
    # vLLM's OpenAI-compatible server (safetensors variants on GPUs).
    VLLM = "vllm", "vLLM"
    # Ollama (GGUF variants imported through a generated Modelfile).
    OLLAMA = "ollama", "Ollama"
    # Any image, with a command template and health/metrics paths.
    CUSTOM = "custom", "Custom image"


class PlacementStrategy(models.TextChoices):
    # Replicas on as many different nodes as possible.
    SPREAD = "spread", "Spread"
    # Fill the fullest node that still fits first.
    BINPACK = "binpack", "Binpack"


class DeploymentState(models.TextChoices):
    # Replicas of the current revision are wanted and the reconciler works toward them.
    ACTIVE = "active", "Active"
    # Rollouts are frozen where they are until an operator resumes.
    PAUSED = "paused", "Paused"
    # No replicas wanted; the spec and revisions are kept.
    STOPPED = "stopped", "Stopped"


class ReplicaState(models.TextChoices):
    # Wanted; no node chosen yet (or no node fits: see ``reason``).
    PENDING = "pending", "Pending"
    # The variant's files are being downloaded to the chosen node first.
    DOWNLOADING = "downloading", "Downloading"
    # The container was asked to start; waiting for the health endpoint.
    STARTING = "starting", "Starting"
    # Health endpoint answers; not yet healthy for min_healthy_seconds.
    HEALTHY = "healthy", "Healthy"
    # Healthy for at least min_healthy_seconds: counts as available.
    AVAILABLE = "available", "Available"
    # Missed its healthy deadline, crashed or stopped answering.
    FAILED = "failed", "Failed"
    # Being removed (old revision, scale down, stop).
    STOPPING = "stopping", "Stopping"
    # Removed; kept for the record.
    GONE = "gone", "Gone"


class RolloutState(models.TextChoices):
    # Moving replicas to the target revision in batches.
    RUNNING = "running", "Running"
    # Every replica of the target revision is available.
    SUCCEEDED = "succeeded", "Succeeded"
    # No progress within the deadline, or a replica failed its health gate.
    FAILED = "failed", "Failed"
    # Frozen by an operator, or by a failure during a rollback (needs a human).
    PAUSED = "paused", "Paused"
    # A newer revision took over before this one finished.
    SUPERSEDED = "superseded", "Superseded"
