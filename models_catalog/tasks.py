"""Celery tasks of the catalog (control queue). Thin: load by id, call the service."""

from __future__ import annotations

from celery import shared_task

from models_catalog import caching


@shared_task(name="models_catalog.tasks.cache_variant", ignore_result=True)
def cache_variant(job_id: int) -> None:
    """Fill the fleet store with a variant's files (a ``cache_variant`` job row)."""
    caching.run(job_id)
