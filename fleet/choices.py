from django.db import models


class NodeState(models.TextChoices):
    # Joined with a join token; no heartbeat received yet.
    PENDING = "pending", "Pending"
    # Heartbeats arrive within the grace period.
    READY = "ready", "Ready"
    # No heartbeat within the grace period (judged by the server's receive time).
    UNREACHABLE = "unreachable", "Unreachable"


class NodeCondition(models.TextChoices):
    # The agent runs but cannot talk to its Docker engine.
    DOCKER_UNREACHABLE = "docker_unreachable", "Docker unreachable"
    # The data dir's disk has less free space than FLEET_NODE_DISK_FREE_MIN_PERCENT.
    DISK_NEARLY_FULL = "disk_nearly_full", "Disk nearly full"
    # The agent's clock differs from the server's by more than FLEET_NODE_CLOCK_SKEW_SECONDS.
    CLOCK_SKEW = "clock_skew", "Clock skew"


class OperatorFlag(models.TextChoices):
    # No new replicas are placed here.
    CORDONED = "cordoned", "Cordoned"
    # Replicas move away (implies cordoned).
    DRAINING = "draining", "Draining"
    # Taken out for maintenance (implies cordoned).
    MAINTENANCE = "maintenance", "Maintenance"


class CommandKind(models.TextChoices):
    # Round trip check: the agent answers with engine info and its clock.
    PROBE = "probe", "Probe"
    # Remove a variant's files from the node's hub cache (blobs no other variant uses).
    DELETE_MODEL = "delete_model", "Delete model files"
    # A replica container's last log lines (with timestamps, optionally since a moment).
    REPLICA_LOGS = "replica_logs", "Replica logs"


class CommandState(models.TextChoices):
    # Created and sent to the node's queue; no answer yet.
    SENT = "sent", "Sent"
    # The agent answered with a result.
    SUCCEEDED = "succeeded", "Succeeded"
    # The agent answered with an error.
    FAILED = "failed", "Failed"
    # No answer before the command's expiry; the agent will not run it any more.
    EXPIRED = "expired", "Expired"
