"""Use cases of the gateway: access keys and aliases. Each writes its history event.

Gateways keep keys and aliases in memory; every change is announced on commit
(:mod:`gateway.invalidation`) so they reload at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ConflictError, ServiceError, check_version
from core.history import ChangeContext, diff, record, snapshot
from core.services import revoke_bearer_key
from deployments.models import Deployment
from gateway import invalidation
from gateway.models import AccessKey, Alias, AliasTarget

KEY_FIELDS = (
    "name",
    "description",
    "all_models",
    "allowed_models",
    "requests_per_minute",
    "tokens_per_minute",
    "expires_at",
)
ALIAS_FIELDS = ("name", "description")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
MAX_WEIGHT = 1000


def _announce(reason: str) -> None:
    transaction.on_commit(lambda: invalidation.publish(reason))


# --- Access keys ----------------------------------------------------------------------------
def _clean_models(names: Iterable[str]) -> list[str]:
    cleaned = sorted({str(name).strip() for name in names if str(name).strip()})
    for name in cleaned:
        if not MODEL_NAME.match(name):
            raise ServiceError(
                f"{name!r} is not a model name (a deployment or alias name).",
                field="allowed_models",
            )
    return cleaned


def _check_key_fields(fields: dict[str, Any]) -> None:
    expires_at = fields.get("expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    for name in ("requests_per_minute", "tokens_per_minute"):
        value = fields.get(name)
        if value is not None and value < 1:
            raise ServiceError(
                "A limit must be at least 1 per minute; leave it empty for no limit.", field=name
            )
    if not fields.get("all_models", True) and not fields.get("allowed_models"):
        raise ServiceError(
            "Name at least one model this key may use, or allow all models.",
            field="allowed_models",
        )


@transaction.atomic
def create_key(
    ctx: ChangeContext,
    *,
    name: str,
    description: str = "",
    all_models: bool = True,
    allowed_models: Iterable[str] = (),
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[AccessKey, str]:
    """Create an access key; returns it with the secret, which is never shown again."""
    name = name.strip()
    if not name:
        raise ServiceError("Give the key a name.", field="name")
    models = [] if all_models else _clean_models(allowed_models)
    fields = {
        "all_models": all_models,
        "allowed_models": models,
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "expires_at": expires_at,
    }
    _check_key_fields(fields)
    secret = AccessKey.generate_key()
    key = AccessKey(
        name=name,
        description=description.strip(),
        key_prefix=secret[: len(AccessKey.KEY_PREFIX) + 6],
        key_hash=AccessKey.hash_key(secret),
        created_by=ctx.user,
        **fields,
    )
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError:
        raise ConflictError(f"An active key named {name!r} exists.", field="name") from None
    record(ctx, "created", key, changes=diff({}, snapshot(key, KEY_FIELDS)))
    _announce(f"key {key.pk} created")
    return key, secret


@transaction.atomic
def update_key(
    ctx: ChangeContext, key: AccessKey, *, expected_version: int | None = None, **fields: Any
) -> AccessKey:
    """Change a key's name, models, limits or expiry (the secret stays)."""
    key = AccessKey.objects.select_for_update().get(pk=key.pk)
    check_version(key.version, expected_version, f"Key {key.name}")
    if key.revoked_at is not None:
        raise ConflictError(f"Key {key.name} is revoked; create a new one.")
    unknown = set(fields) - set(KEY_FIELDS)
    if unknown:
        raise ServiceError(f"Cannot change {', '.join(sorted(unknown))} here.")
    before = snapshot(key, KEY_FIELDS)
    if "name" in fields:
        fields["name"] = str(fields["name"]).strip()
        if not fields["name"]:
            raise ServiceError("Give the key a name.", field="name")
    if "allowed_models" in fields:
        fields["allowed_models"] = _clean_models(fields["allowed_models"])
    for name, value in fields.items():
        setattr(key, name, value)
    if key.all_models:
        key.allowed_models = []
    changes = diff(before, snapshot(key, KEY_FIELDS))
    current = {f: getattr(key, f) for f in KEY_FIELDS}
    if "expires_at" not in changes:
        current["expires_at"] = None  # an unchanged expiry is not checked again
    _check_key_fields(current)
    if not changes:
        return key
    key.version += 1
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError:
        raise ConflictError(f"An active key named {key.name!r} exists.", field="name") from None
    record(ctx, "updated", key, changes=changes)
    _announce(f"key {key.pk} updated")
    return key


@transaction.atomic
def revoke_key(ctx: ChangeContext, key: AccessKey) -> AccessKey:
    """Revoke a key: gateways refuse it as soon as they hear of it (and within a reload)."""
    key, revoked = revoke_bearer_key(ctx, key)
    if revoked:
        _announce(f"key {key.pk} revoked")
    return key


# --- Aliases --------------------------------------------------------------------------------
def _resolve_targets(targets: Iterable[dict[str, Any]]) -> list[tuple[Deployment, int]]:
    resolved: list[tuple[Deployment, int]] = []
    seen: set[str] = set()
    for target in targets:
        name = str(target.get("deployment", "")).strip()
        weight = target.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
            raise ServiceError(
                f"The weight of {name or 'a target'} must be a whole number from 0 to "
                f"{MAX_WEIGHT}.",
                field="targets",
            )
        if name in seen:
            raise ServiceError(f"{name} is listed twice.", field="targets")
        seen.add(name)
        deployment = Deployment.objects.filter(
            name=name, deletion_requested_at__isnull=True
        ).first()
        if deployment is None:
            raise ServiceError(f"There is no deployment named {name!r}.", field="targets")
        resolved.append((deployment, weight))
    if not resolved:
        raise ServiceError("An alias needs at least one target deployment.", field="targets")
    if sum(weight for _, weight in resolved) == 0:
        raise ServiceError("At least one target needs a weight above 0.", field="targets")
    return resolved


def _check_alias_name(name: str) -> str:
    name = name.strip()
    if not MODEL_NAME.match(name):
        raise ServiceError(
            "An alias name has letters, digits and . _ : / - (up to 100 characters).",
            field="name",
        )
    if Deployment.objects.filter(name=name).exists():
        raise ConflictError(
            f"{name!r} is a deployment's name; an alias must not hide it.", field="name"
        )
    return name


def _set_targets(alias: Alias, targets: list[tuple[Deployment, int]]) -> None:
    alias.targets.all().delete()
    AliasTarget.objects.bulk_create(
        AliasTarget(alias=alias, deployment=deployment, weight=weight)
        for deployment, weight in targets
    )


@transaction.atomic
def create_alias(
    ctx: ChangeContext, *, name: str, targets: Iterable[dict[str, Any]], description: str = ""
) -> Alias:
    """An alias routing to deployments by weight (``[{"deployment": ..., "weight": ...}]``)."""
    name = _check_alias_name(name)
    if Alias.objects.filter(name=name).exists():
        raise ConflictError(f"An alias named {name!r} exists.", field="name")
    resolved = _resolve_targets(targets)
    alias = Alias.objects.create(name=name, description=description.strip(), created_by=ctx.user)
    _set_targets(alias, resolved)
    changes = diff({}, snapshot(alias, ALIAS_FIELDS))
    changes["targets"] = {"before": None, "after": alias.target_list()}
    record(ctx, "created", alias, changes=changes)
    _announce(f"alias {alias.name} created")
    return alias


@transaction.atomic
def update_alias(
    ctx: ChangeContext,
    alias: Alias,
    *,
    expected_version: int | None = None,
    targets: Iterable[dict[str, Any]] | None = None,
    description: str | None = None,
) -> Alias:
    """Change an alias's targets or weights (e.g. move a canary from 10 % to 50 %)."""
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    check_version(alias.version, expected_version, f"Alias {alias.name}")
    before_targets = alias.target_list()
    before = snapshot(alias, ALIAS_FIELDS)
    if description is not None:
        alias.description = description.strip()
    if targets is not None:
        _set_targets(alias, _resolve_targets(targets))
    changes = diff(before, snapshot(alias, ALIAS_FIELDS))
    after_targets = alias.target_list()
    if after_targets != before_targets:
        changes["targets"] = {"before": before_targets, "after": after_targets}
    if not changes:
        return alias
    alias.version += 1
    alias.save()
    record(ctx, "updated", alias, changes=changes)
    _announce(f"alias {alias.name} updated")
    return alias


@transaction.atomic
def delete_alias(ctx: ChangeContext, alias: Alias) -> None:
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    record(
        ctx,
        "deleted",
        alias,
        changes={"targets": {"before": alias.target_list(), "after": None}},
    )
    alias.delete()
    _announce(f"alias {alias.name} deleted")
