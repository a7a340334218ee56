from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from core.change_context import MAX_REASON_LENGTH
from core.choices import Role, SecretKind, TokenScope


class ReasonFormMixin(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=MAX_REASON_LENGTH,
        help_text="Optional: why you make this change (shown in the history).",
    )


class UserCreateForm(ReasonFormMixin):
    username = forms.RegexField(regex=r"^[\w.@+-]+\Z", max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to generate a one-time password, shown once.",
    )
    field_order = ["username", "email", "role", "password", "reason"]


class UserEditForm(ReasonFormMixin):
    role = forms.ChoiceField(choices=Role.choices)
    is_active = forms.BooleanField(required=False, label="Active")
    version = forms.IntegerField(widget=forms.HiddenInput)
    field_order = ["role", "is_active", "reason", "version"]


EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
]


class TokenCreateForm(ReasonFormMixin):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. 'ci-pipeline'.")
    scope = forms.ChoiceField(choices=TokenScope.choices, initial=TokenScope.READ)
    expires_in = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, required=False, coerce=int, empty_value=None, label="Expires"
    )
    field_order = ["name", "scope", "expires_in", "reason"]

    def expires_at(self):  # type: ignore[no-untyped-def]
        days = self.cleaned_data.get("expires_in")
        return timezone.now() + timedelta(days=days) if days else None


class SecretCreateForm(ReasonFormMixin):
    name = forms.SlugField(max_length=100, help_text="Letters, digits, - and _, e.g. 'hf-main'.")
    kind = forms.ChoiceField(choices=SecretKind.choices)
    description = forms.CharField(max_length=200, required=False)
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        max_length=16384,
        help_text="Encrypted at rest; never shown again.",
    )
    field_order = ["name", "kind", "description", "value", "reason"]


class SecretUpdateForm(ReasonFormMixin):
    kind = forms.ChoiceField(choices=SecretKind.choices)
    description = forms.CharField(max_length=200, required=False)
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        required=False,
        max_length=16384,
        help_text="Leave empty to keep the current value.",
    )
    version = forms.IntegerField(widget=forms.HiddenInput)
    field_order = ["kind", "description", "value", "reason", "version"]
