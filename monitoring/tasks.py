"""Periodic tasks (beat, config/settings.py CELERY_BEAT_SCHEDULE): thin calls of services."""

from __future__ import annotations

from celery import shared_task

from monitoring import services


@shared_task(name="monitoring.tasks.roll_up", ignore_result=True)
def roll_up() -> None:
    services.roll_up()


@shared_task(name="monitoring.tasks.maintain_partitions", ignore_result=True)
def maintain_partitions() -> None:
    services.maintain_partitions()
