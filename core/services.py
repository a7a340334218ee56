"""Use cases for accounts, API tokens and secrets. Each writes its history event atomically."""

from __future__ import annotations

import secrets as pysecrets
from datetime import datetime
from typing import TypeVar

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import crypto
from core.choices import Role, SecretKind, TokenScope
from core.errors import ConflictError, ServiceError, check_version
from core.history import REDACTED, ChangeContext, diff, record, snapshot
from core.models import ApiToken, BearerKey, Secret, User
from core.versioning import VersionedModel

K = TypeVar("K", bound=VersionedModel)

USER_FIELDS = ("username", "email", "first_name", "last_name", "role", "is_active")
TOKEN_FIELDS = ("name", "scope", "expires_at", "user")
SECRET_FIELDS = ("name", "kind", "description")


# --- Users ----------------------------------------------------------------------------------
def _check_password(password: str, user: User | None = None) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ServiceError(" ".join(exc.messages), field="password") from None


@transaction.atomic
def create_user(
    ctx: ChangeContext,
    *,
    username: str,
    role: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    password: str | None = None,
) -> tuple[User, str | None]:
    """Create a user; returns the one-time password when none was given."""
    username = username.strip()
    if User.objects.filter(username__iexact=username).exists():
        raise ConflictError(f"The user name {username!r} is taken.", field="username")
    user = User(
        username=username,
        email=email,
        first_name=first_name,
        last_name=last_name,
        role=Role(role),
    )
    generated = None
    if password:
        _check_password(password, user)
    else:
        generated = pysecrets.token_urlsafe(15)
    user.set_password(password or generated)
    user.save()
    record(ctx, "created", user, changes=diff({}, snapshot(user, USER_FIELDS)))
    return user, generated


def _active_admins_excluding(user: User) -> int:
    return User.objects.filter(role=Role.ADMIN, is_active=True).exclude(pk=user.pk).count()


@transaction.atomic
def update_user(
    ctx: ChangeContext,
    user: User,
    *,
    expected_version: int | None = None,
    **fields: object,
) -> User:
    """Change a user's profile, role or active flag; the last admin cannot lose admin."""
    user = User.objects.select_for_update().get(pk=user.pk)
    check_version(user.version, expected_version, f"User {user.username}")
    unknown = set(fields) - set(USER_FIELDS[1:])
    if unknown:
        raise ServiceError(f"Cannot change {', '.join(sorted(unknown))} here.")
    before = snapshot(user, USER_FIELDS)
    for name, value in fields.items():
        setattr(user, name, value)
    loses_admin = before["role"] == Role.ADMIN and before["is_active"] and not user.is_fleet_admin
    if loses_admin and _active_admins_excluding(user) == 0:
        raise ConflictError(
            f"{user.username} is the last active admin; make someone else admin first."
        )
    if ctx.user is not None and ctx.user.pk == user.pk and not user.is_active:
        raise ConflictError("You cannot deactivate your own account.", field="is_active")
    changes = diff(before, snapshot(user, USER_FIELDS))
    if not changes:
        return user
    user.version += 1
    user.save()
    record(ctx, "updated", user, changes=changes)
    return user


@transaction.atomic
def set_password(ctx: ChangeContext, user: User, password: str) -> User:
    _check_password(password, user)
    user = User.objects.select_for_update().get(pk=user.pk)
    user.set_password(password)
    user.version += 1
    user.save()
    record(
        ctx, "password_changed", user, changes={"password": {"before": REDACTED, "after": REDACTED}}
    )
    return user


# --- API tokens -----------------------------------------------------------------------------
@transaction.atomic
def create_token(
    ctx: ChangeContext,
    *,
    owner: User,
    name: str,
    scope: str = TokenScope.READ,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``owner``; returns it with the key, which is never shown again."""
    name = name.strip()
    if not name:
        raise ServiceError("Give the token a name.", field="name")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    if scope == TokenScope.WRITE and not owner.has_role(Role.OPERATOR):
        raise ServiceError("A viewer's token can only read; choose the read scope.", field="scope")
    key = ApiToken.generate_key()
    token = ApiToken(
        user=owner,
        name=name,
        scope=TokenScope(scope),
        expires_at=expires_at,
        key_prefix=key[: len(ApiToken.KEY_PREFIX) + 6],
        key_hash=ApiToken.hash_key(key),
    )
    try:
        with transaction.atomic():
            token.save()
    except IntegrityError:
        raise ConflictError(
            f"{owner.username} already has an active token named {name!r}.", field="name"
        ) from None
    record(ctx, "created", token, changes=diff({}, snapshot(token, TOKEN_FIELDS)))
    return token, key


def revoke_bearer_key(ctx: ChangeContext, key: K) -> tuple[K, bool]:
    """Revoke an API token or an access key, locked and recorded; call it in a transaction.
    The row as it is now, and False when it was revoked already."""
    locked = type(key)._default_manager.select_for_update().get(pk=key.pk)
    assert isinstance(locked, BearerKey)
    if locked.revoked_at is not None:
        return locked, False
    locked.revoked_at = timezone.now()
    locked.version += 1
    locked.save(update_fields=["revoked_at", "version"])
    record(
        ctx,
        "revoked",
        locked,
        changes={"revoked_at": {"before": None, "after": locked.revoked_at.isoformat()}},
    )
    return locked, True


@transaction.atomic
def revoke_token(ctx: ChangeContext, token: ApiToken) -> ApiToken:
    return revoke_bearer_key(ctx, token)[0]


def authenticate_token(key: str, *, touch_after_seconds: int) -> ApiToken | None:
    """The usable token for ``key``, updating its last-used time at most once a period."""
    if not key.startswith(ApiToken.KEY_PREFIX):
        return None
    token = (
        ApiToken.objects.usable()
        .select_related("user")
        .filter(key_hash=ApiToken.hash_key(key))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    last = token.last_used_at
    if last is None or (now - last).total_seconds() >= touch_after_seconds:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# --- Secrets --------------------------------------------------------------------------------
BEARER_SHAPE = "a token is printable ASCII without spaces or line breaks"


def is_bearer_token(value: str) -> bool:
    """Whether ``value`` can travel as an HTTP bearer token (``Authorization: Bearer …``)."""
    return bool(value) and all(33 <= ord(c) <= 126 for c in value)


def _check_value(value: str, kind: str) -> None:
    if not value:
        raise ServiceError("The secret value is empty.", field="value")
    if kind == SecretKind.HUGGINGFACE_TOKEN and not is_bearer_token(value):
        raise ServiceError(
            f"This value cannot be a Hugging Face token: {BEARER_SHAPE}. Paste the token alone.",
            field="value",
        )


def _secret_changes(before: dict[str, object], secret: Secret, value_changed: bool) -> dict:
    changes = diff(before, snapshot(secret, SECRET_FIELDS))
    if value_changed:
        changes["value"] = {"before": REDACTED if before else None, "after": REDACTED}
    return changes


@transaction.atomic
def create_secret(
    ctx: ChangeContext,
    *,
    name: str,
    value: str,
    kind: str = SecretKind.GENERIC,
    description: str = "",
) -> Secret:
    _check_value(value, kind)
    if Secret.objects.filter(name=name).exists():
        raise ConflictError(f"A secret named {name!r} exists already.", field="name")
    secret = Secret.objects.create(
        name=name,
        kind=SecretKind(kind),
        description=description,
        ciphertext=crypto.encrypt(value),
        created_by=ctx.user,
    )
    record(ctx, "created", secret, changes=_secret_changes({}, secret, value_changed=True))
    return secret


@transaction.atomic
def update_secret(
    ctx: ChangeContext,
    secret: Secret,
    *,
    expected_version: int | None = None,
    value: str | None = None,
    kind: str | None = None,
    description: str | None = None,
) -> Secret:
    secret = Secret.objects.select_for_update().get(pk=secret.pk)
    check_version(secret.version, expected_version, f"Secret {secret.name}")
    before = snapshot(secret, SECRET_FIELDS)
    if kind is not None:
        secret.kind = SecretKind(kind)
    if description is not None:
        secret.description = description
    if value is not None:
        _check_value(value, secret.kind)
        secret.ciphertext = crypto.encrypt(value)
    elif kind == SecretKind.HUGGINGFACE_TOKEN:
        _check_value(crypto.decrypt(secret.ciphertext), kind)
    changes = _secret_changes(before, secret, value_changed=value is not None)
    if not changes:
        return secret
    secret.version += 1
    secret.updated_at = timezone.now()
    secret.save()
    record(ctx, "updated", secret, changes=changes)
    return secret


@transaction.atomic
def delete_secret(ctx: ChangeContext, secret: Secret) -> None:
    record(ctx, "deleted", secret, changes=diff(snapshot(secret, SECRET_FIELDS), {}))
    secret.delete()


def reveal_secret(name: str) -> str:
    """The plaintext of a secret, for the control plane's own use (never for an API answer)."""
    secret = Secret.objects.filter(name=name).first()
    if secret is None:
        raise ServiceError(f"There is no secret named {name!r}.")
    return crypto.decrypt(secret.ciphertext)


def rotate_secrets(ctx: ChangeContext, *, batch_size: int = 200) -> tuple[int, int]:
    """Re-encrypt every secret under the first key. Returns (rotated, already current).

    Each row is rewritten with a conditional UPDATE on its old ciphertext, so a concurrent
    change made through the API is never overwritten; old keys keep decrypting meanwhile.
    """
    rotated = current = 0
    last_pk = 0
    while True:
        batch = list(
            Secret.objects.filter(pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", "ciphertext")[:batch_size]
        )
        if not batch:
            break
        for pk, ciphertext in batch:
            last_pk = pk
            if crypto.is_current(ciphertext):
                current += 1
                continue
            new = crypto.rotate(ciphertext)
            rotated += Secret.objects.filter(pk=pk, ciphertext=ciphertext).update(ciphertext=new)
    if rotated:
        with transaction.atomic():
            record(
                ctx,
                "keys_rotated",
                target_type="core.secret",
                target_id="*",
                target_name="all secrets",
                changes={"rotated": {"before": None, "after": rotated}},
            )
    return rotated, current
