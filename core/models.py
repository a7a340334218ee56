"""Accounts, API tokens, encrypted secrets and the append-only history."""

from __future__ import annotations

import hashlib
import secrets as pysecrets
from typing import Any, ClassVar, Self, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils import timezone

from core import targets
from core.choices import ROLE_RANK, ActorType, Role, SecretKind, TokenScope
from core.versioning import VersionedModel


class User(AbstractUser, VersionedModel):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    objects: ClassVar[UserManager[User]] = UserManager()  # type: ignore[assignment]

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username

    def has_role(self, role: str) -> bool:
        """True when the user is active and their role includes ``role``."""
        return bool(self.is_active) and ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]

    @property
    def is_fleet_admin(self) -> bool:
        return self.has_role(Role.ADMIN)


_K = TypeVar("_K", bound=models.Model)


class BearerKeyQuerySet(models.QuerySet[_K]):
    def usable(self) -> Self:
        """Neither revoked nor expired."""
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class BearerKey:
    """What personal API tokens and the gateway's access keys share: a prefixed random key of
    which only the SHA-256 is stored, an optional expiry and a revocation time."""

    KEY_PREFIX: ClassVar[str]
    expires_at: Any
    revoked_at: Any

    @classmethod
    def generate_key(cls) -> str:
        return cls.KEY_PREFIX + pysecrets.token_urlsafe(32)

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def get_status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiTokenQuerySet(BearerKeyQuerySet["ApiToken"]):
    pass


class ApiToken(BearerKey, VersionedModel):
    """A personal API token. Only its SHA-256 is stored; the key is shown once."""

    KEY_PREFIX = "slmf_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=8, choices=TokenScope.choices, default=TokenScope.READ)
    key_prefix = models.CharField(max_length=16, help_text="First characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="core_apitoken_unique_active_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @property
    def is_usable(self) -> bool:
        return self.get_status() == "active"


class Secret(VersionedModel):
    """A credential encrypted at rest with FLEET_ENCRYPTION_KEYS; never shown after creation."""

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=SecretKind.choices, default=SecretKind.GENERIC)
    description = models.CharField(max_length=200, blank=True)
    ciphertext = models.TextField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # never leak the ciphertext into logs either
        return f"<Secret {self.name!r} kind={self.kind}>"


class AppendOnlyError(RuntimeError):
    """History events cannot be changed or deleted."""


class HistoryEventQuerySet(models.QuerySet["HistoryEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("History events are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("History events are append-only.")


class HistoryEvent(models.Model):
    """One change: who, when, what, why. Append-only (also enforced by a database trigger)."""

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=150, db_index=True)
    actor_detail = models.CharField(max_length=200, blank=True)
    verb = models.CharField(max_length=40, db_index=True)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=64)
    target_name = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    objects = HistoryEventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "-occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.verb} {self.target_type} {self.target_name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("History events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("History events are append-only.")

    @property
    def target_url(self) -> str | None:
        return targets.target_url(self.target_type, self.target_id)


class Setting(VersionedModel):
    """A fleet-wide setting changed from the console (e.g. the licence policy)."""

    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class IdempotencyRecord(models.Model):
    """One key's first request (hashed) and its answer."""

    principal = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    status = models.PositiveSmallIntegerField(null=True)
    headers = models.JSONField(default=dict)
    body = models.BinaryField(default=b"")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="idempotency_key_once")
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.key})"


from core.jobs import Job  # noqa: E402  (the jobs base lives in its own module)

__all__ = [
    "ApiToken",
    "HistoryEvent",
    "IdempotencyRecord",
    "Job",
    "Secret",
    "Setting",
    "User",
    "VersionedModel",
]
