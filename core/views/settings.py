"""Settings pages: users (admins), API tokens (everyone, their own), secrets, password."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from core import services
from core.change_context import ChangeContext
from core.choices import Role
from core.errors import ServiceError
from core.forms import (
    SecretCreateForm,
    SecretUpdateForm,
    TokenCreateForm,
    UserCreateForm,
    UserEditForm,
)
from core.models import ApiToken, Secret, User
from core.views.mixins import SAFE_METHODS, require_role


def _apply_error(form: forms.Form, error: ServiceError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)


def settings_index(request: HttpRequest) -> HttpResponse:
    return redirect("settings-tokens")


# --- Users ----------------------------------------------------------------------------------
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def settings_users(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.ADMIN)
    form = UserCreateForm(request.POST or None)
    created: dict[str, Any] | None = None
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        ctx = ChangeContext.from_request(request, reason=data.pop("reason"))
        try:
            user, one_time = services.create_user(ctx, **data)
        except ServiceError as error:
            _apply_error(form, error)
        else:
            created = {"user": user, "password": one_time}
            messages.success(request, f"User {user.username} created.")
            form = UserCreateForm()
    users = User.objects.order_by("username")
    return render(
        request,
        "core/settings_users.html",
        {"form": form, "users": users, "created": created},
        status=201 if created else 200,
    )


@require_http_methods(["GET", "POST"])
def settings_user_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMIN)
    user = get_object_or_404(User, pk=pk)
    initial = {"role": user.role, "is_active": user.is_active, "version": user.version}
    form = UserEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        ctx = ChangeContext.from_request(request, reason=data.pop("reason"))
        version = data.pop("version")
        try:
            services.update_user(ctx, user, expected_version=version, **data)
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, f"User {user.username} updated.")
            return redirect("settings-users")
    return render(request, "core/settings_user_edit.html", {"form": form, "subject": user})


# --- API tokens -----------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
def settings_tokens(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    form = TokenCreateForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        ctx = ChangeContext.from_request(request, reason=form.cleaned_data["reason"])
        try:
            token, new_key = services.create_token(
                ctx,
                owner=user,
                name=form.cleaned_data["name"],
                scope=form.cleaned_data["scope"],
                expires_at=form.expires_at(),
            )
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, f"Token {token.name} created. Copy it now: it is shown once.")
            form = TokenCreateForm()
    tokens = ApiToken.objects.select_related("user")
    if not user.is_fleet_admin:
        tokens = tokens.filter(user=user)
    return render(
        request,
        "core/settings_tokens.html",
        {"form": form, "tokens": tokens, "new_key": new_key},
        status=201 if new_key else 200,
    )


@require_POST
def settings_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    tokens = ApiToken.objects.all() if user.is_fleet_admin else ApiToken.objects.filter(user=user)
    token = get_object_or_404(tokens, pk=pk)
    services.revoke_token(
        ChangeContext.from_request(request, reason=request.POST.get("reason")), token
    )
    messages.success(request, f"Token {token.name} revoked; it no longer works.")
    return redirect("settings-tokens")


# --- Secrets --------------------------------------------------------------------------------
@sensitive_post_parameters("value")
@require_http_methods(["GET", "POST"])
def settings_secrets(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.VIEWER if request.method in SAFE_METHODS else Role.OPERATOR)
    form = SecretCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        ctx = ChangeContext.from_request(request, reason=data.pop("reason"))
        try:
            secret = services.create_secret(ctx, **data)
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, f"Secret {secret.name} stored (encrypted).")
            return redirect("settings-secrets")
    secrets = Secret.objects.select_related("created_by")
    return render(request, "core/settings_secrets.html", {"form": form, "secrets": secrets})


@sensitive_post_parameters("value")
@require_http_methods(["GET", "POST"])
def settings_secret_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    secret = get_object_or_404(Secret, pk=pk)
    initial = {"kind": secret.kind, "description": secret.description, "version": secret.version}
    form = SecretUpdateForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        ctx = ChangeContext.from_request(request, reason=data.pop("reason"))
        version = data.pop("version")
        try:
            services.update_secret(
                ctx, secret, expected_version=version, value=data.pop("value") or None, **data
            )
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, f"Secret {secret.name} updated.")
            return redirect("settings-secrets")
    return render(request, "core/settings_secret_edit.html", {"form": form, "secret": secret})


@require_POST
def settings_secret_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.OPERATOR)
    secret = get_object_or_404(Secret, pk=pk)
    services.delete_secret(
        ChangeContext.from_request(request, reason=request.POST.get("reason")), secret
    )
    messages.success(request, f"Secret {secret.name} deleted.")
    return redirect("settings-secrets")


# --- Own password ---------------------------------------------------------------------------
@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def settings_password(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    form = PasswordChangeForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.set_password(
            ChangeContext.from_request(request), user, form.cleaned_data["new_password1"]
        )
        user.refresh_from_db()
        update_session_auth_hash(request, user)
        messages.success(request, "Password changed.")
        return redirect("settings-tokens")
    return render(request, "core/settings_password.html", {"form": form})
