"""Access keys for applications, model aliases with weighted targets, and daily usage."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from core.models import BearerKey, BearerKeyQuerySet, VersionedModel


class AccessKeyQuerySet(BearerKeyQuerySet["AccessKey"]):
    pass


class AccessKey(BearerKey, VersionedModel):
    """An application's key for the gateway. Only its SHA-256 is stored; shown once."""

    KEY_PREFIX = "slmk_"

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)
    key_prefix = models.CharField(max_length=16, help_text="First characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # True: every deployment and alias; False: only the names in ``allowed_models``.
    all_models = models.BooleanField(default=True)
    allowed_models = models.JSONField(default=list, blank=True)
    # None = no limit.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AccessKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(revoked_at__isnull=True),
                name="gateway_accesskey_unique_active_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    def may_use(self, model: str) -> bool:
        return self.all_models or model in (self.allowed_models or [])


class Alias(VersionedModel):
    """A model name applications send that routes to one or more deployments by weight."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return self.name

    def target_list(self) -> list[dict[str, Any]]:
        return [
            {"deployment": t.deployment.name, "weight": t.weight}
            for t in self.targets.select_related("deployment").order_by("deployment__name")
        ]


class AliasTarget(models.Model):
    """One deployment behind an alias; requests split in proportion to ``weight``."""

    alias = models.ForeignKey(Alias, models.CASCADE, related_name="targets")
    deployment = models.ForeignKey(
        "deployments.Deployment", models.CASCADE, related_name="gateway_targets"
    )
    # 0 keeps the target listed but sends it nothing (a drained canary).
    weight = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(1000)])

    class Meta:
        ordering = ["alias", "deployment"]
        constraints = [
            models.UniqueConstraint(
                fields=["alias", "deployment"], name="gateway_aliastarget_unique_deployment"
            )
        ]

    def __str__(self) -> str:
        return f"{self.alias.name} → {self.deployment.name} ({self.weight})"


class UsageDay(models.Model):
    """Requests and tokens of one key on one deployment on one (UTC) day."""

    day = models.DateField()
    key = models.ForeignKey(AccessKey, models.CASCADE, related_name="usage")
    # The name is kept: usage outlives a deleted deployment.
    deployment = models.CharField(max_length=63)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "deployment", "key"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "key", "deployment"], name="gateway_usageday_unique"
            )
        ]
        indexes = [models.Index(fields=["deployment", "-day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.key_id} {self.deployment}"

    @property
    def total_tokens(self) -> int:
        return int(self.prompt_tokens) + int(self.completion_tokens)
