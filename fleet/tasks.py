from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from fleet import services
from fleet.choices import CommandState
from fleet.models import NodeCommand

RESEND_AFTER_SECONDS = 15


@shared_task(name="fleet.tasks.sweep_liveness", ignore_result=True)
def sweep_liveness() -> None:
    """Mark silent nodes unreachable, and re-send commands that got no answer yet."""
    services.sweep_liveness()
    now = timezone.now()
    unanswered = NodeCommand.objects.filter(
        state=CommandState.SENT,
        expires_at__gt=now,
        last_sent_at__lt=now - timedelta(seconds=RESEND_AFTER_SECONDS),
    ).values_list("pk", flat=True)[:500]
    for command_id in unanswered:
        services.dispatch_command(command_id)
