"""The optimistic-concurrency version every mutable resource carries (sent as the ETag).

Its own home, below :mod:`core.models` and :mod:`core.jobs` (and every app's models), so the
jobs base and the accounts need not import each other for it.
"""

from __future__ import annotations

from django.db import models


class VersionedModel(models.Model):
    """A mutable resource with an optimistic-concurrency version (sent as the ETag)."""

    version = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        abstract = True

    @property
    def etag(self) -> str:
        return f'"{self.version}"'
